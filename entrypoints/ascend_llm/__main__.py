"""Allow ``python -m ascend_llm`` as an alias of the ``ascend-llm`` console script."""

from ascend_llm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

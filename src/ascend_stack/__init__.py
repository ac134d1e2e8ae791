"""ascend-llm-stack builder: version matrix, rendering and building of the Ascend image chain.

The in-image stage runner lives in ``entrypoints/`` (package ``ascend_llm``) and never imports this.
"""

__version__ = "0.1.0"

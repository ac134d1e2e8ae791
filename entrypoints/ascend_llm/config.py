"""``--config FILE.yaml``: option values from a file; command-line flags win.

Keys are option names with ``_`` or ``-`` (``seq_length`` or ``seq-length``). Top-level keys
apply to every stage that has the option (so one file can serve convert, sft and generate);
a section named after a stage (``sft:``) applies to that stage only and overrides the top level.
``extra_args:`` (a list) is passed to MindSpeed-LLM like ``-- ...``. A key no stage knows is an
error, so a typo never goes unnoticed; so is a key given twice (YAML would keep the last one silently),
also when spelled both ways (``seq_length`` and ``seq-length``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from ascend_llm.errors import UsageError
from ascend_llm.options import Option
from ascend_llm.preflight import expect
from ascend_llm.yamlfile import DuplicateKey, load_yaml

EXTRA_KEY = "extra_args"


def _normalise(key: Any) -> str:
    return str(key).strip().replace("-", "_")


def load_config(
    path: str, stage: str, options: Sequence[Option], all_dests: Iterable[str], stage_names: Iterable[str]
) -> tuple[dict[str, Any], list[str]]:
    """Read ``path``; return this stage's option values and extra args."""
    file = Path(path)
    wrong = expect(file, "--config", "file", "pass a YAML file of option: value")
    if wrong:
        raise UsageError(*wrong)
    try:
        data = load_yaml(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"--config {path}: not a UTF-8 text file") from None
    except DuplicateKey as exc:
        raise UsageError(f"--config {path}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"--config {path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: must be a mapping of option: value")
    by_dest = {o.dest: o for o in options}
    known: set[str] = set(all_dests)
    stages = set(stage_names)
    values: dict[str, Any] = {}
    extra: list[str] = []

    def take(mapping: dict[Any, Any], where: str, strict: bool) -> None:
        spelled: dict[str, Any] = {}
        for raw_key, value in mapping.items():
            key = _normalise(raw_key)
            if key in spelled:
                raise UsageError(f"{where}: '{spelled[key]}' and '{raw_key}' are the same option; keep one")
            spelled[key] = raw_key
            if key == EXTRA_KEY:
                if not isinstance(value, list):
                    raise UsageError(f"{where}: '{EXTRA_KEY}' must be a list of strings")
                extra.extend(str(v) for v in value)
            elif key in stages and not strict:
                continue
            elif key in ("config",):
                raise UsageError(f"{where}: a config file cannot name another config file")
            elif key in by_dest:
                values[key] = by_dest[key].convert(value, where)
            elif strict or key not in known:
                hint = "" if key in known else " (no stage has such an option; see `ascend-llm <stage> --help`)"
                raise UsageError(f"{where}: unknown option '{raw_key}' for {stage}{hint}")

    take(data, f"--config {path}", strict=False)
    section = data.get(stage)
    if section is not None:
        if not isinstance(section, dict):
            raise UsageError(f"--config {path}: section '{stage}' must be a mapping")
        take(section, f"--config {path} [{stage}]", strict=True)
    return values, extra

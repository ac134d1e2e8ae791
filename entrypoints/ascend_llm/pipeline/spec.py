"""The pipeline file: what it may say, and how ``${...}`` references are resolved.

A pipeline file names the model preset, the inputs, the output root and an ordered list of steps,
each an existing stage with its options (the stage's own option names, as in ``--config`` files).
Nothing here knows what a stage does: the options are turned into the stage's own argv and parsed
by the stage (see ``plan.py``). The file is read with a YAML loader that refuses duplicate keys, so a
repeated step option or input never silently replaces the first one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ascend_llm.errors import UsageError

TOP_KEYS = ("name", "model", "release", "inputs", "output", "defaults", "steps")
STEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
REFERENCE = re.compile(r"\$\{([^}]*)\}")
LITERAL = "$${"
REFUSED_OPTIONS = {
    "config": "a step's options go into the step itself",
    "dry_run": "use `ascend-llm pipeline FILE --dry-run` for the whole run",
    "no_preflight": "the pipeline always checks every step before it starts",
}
NOT_STEPS = {
    "tensorboard": "it serves until stopped; run `ascend-llm tensorboard` next to the pipeline",
}


class DuplicateKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _mapping(loader: DuplicateKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    """Refuse a key written twice in one mapping (keys merged in with ``<<:`` may be overridden)."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise UsageError(
                f"{loader.name}: line {key_node.start_mark.line + 1}: '{key}' is given twice "
                f"in one mapping (first at line {seen[key] + 1}); keep one"
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


DuplicateKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


@dataclass
class StepSpec:
    """One step as written: its stage (and action) and its raw option values."""

    index: int
    name: str
    stage: str
    action: str | None
    options: dict[str, Any]
    extra: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.stage} {self.action}" if self.action else self.stage


@dataclass
class PipelineSpec:
    """The whole file, checked for shape (not for stage options: the stages do that)."""

    path: Path
    name: str
    inputs: dict[str, str]
    output: str
    defaults: dict[str, Any]
    steps: list[StepSpec]

    def step(self, name: str) -> StepSpec:
        for step in self.steps:
            if step.name == name:
                return step
        raise UsageError(f"no step named '{name}' in {self.path}; the steps are {', '.join(self.names())}")

    def names(self) -> list[str]:
        return [s.name for s in self.steps]


def read_yaml(path: Path) -> Any:
    """The file's data; one line for every way reading it can fail."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such pipeline file") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory; pass the pipeline YAML file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a UTF-8 text file") from None
    loader = DuplicateKeyLoader(text)
    loader.name = str(path)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    finally:
        loader.dispose()


def load_spec(
    path: Path,
    stage_names: dict[str, Any],
    input_overrides: dict[str, str] | None = None,
    output_override: str | None = None,
) -> PipelineSpec:
    """Parse and shape-check the file; every shape problem is listed in one error."""
    data = read_yaml(path)
    where = str(path)
    if not isinstance(data, dict):
        raise UsageError(f"{where}: must be a mapping with {', '.join(TOP_KEYS)} (see ascend-llm pipeline --help)")
    problems: list[str] = []
    unknown = [str(k) for k in data if k not in TOP_KEYS]
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(unknown)}; a pipeline file has {', '.join(TOP_KEYS)}")
    name = data.get("name") or path.stem
    if not isinstance(name, str) or not STEP_NAME.match(name):
        problems.append(f"{where}: name {name!r}: letters, digits, '_' and '-' only")
    inputs_raw = data.get("inputs") or {}
    inputs: dict[str, str] = {}
    if not isinstance(inputs_raw, dict):
        problems.append(f"{where}: inputs must be a mapping of NAME: PATH")
    else:
        for key, value in inputs_raw.items():
            if not isinstance(key, str) or not STEP_NAME.match(key):
                problems.append(f"{where}: input name {key!r}: letters, digits, '_' and '-' only")
            elif not isinstance(value, str) or not value:
                problems.append(f"{where}: inputs.{key} must be a path")
            else:
                inputs[key] = value
    here = path.resolve().parent  # relative paths in the file are relative to the file
    inputs = {k: os.path.join(here, os.path.expanduser(v)) for k, v in inputs.items()}
    for key, value in (input_overrides or {}).items():  # ... and on the command line, to the cwd
        if key not in inputs:
            known = ", ".join(inputs) or "none"
            problems.append(f"--input {key}=...: the file has no input '{key}' (inputs: {known})")
        inputs[key] = os.path.abspath(os.path.expanduser(value))
    output = data.get("output")
    if output_override:
        output = os.path.abspath(os.path.expanduser(output_override))
    elif isinstance(output, str) and output:
        output = os.path.join(here, os.path.expanduser(output))
    if not isinstance(output, str) or not output:
        problems.append(f"{where}: output must name the output root directory (every step's results go under it)")
        output = ""
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        problems.append(f"{where}: defaults must be a mapping of option: value")
        defaults = {}
    defaults = {str(k).replace("-", "_"): v for k, v in defaults.items()}
    for key in ("model", "release"):
        if data.get(key) is not None:
            if key in defaults:
                problems.append(f"{where}: {key} is given at the top and in defaults; keep one")
            defaults[key] = data[key]
    for key in defaults:
        if key in REFUSED_OPTIONS:
            problems.append(f"{where}: defaults.{key}: {REFUSED_OPTIONS[key]}")
    steps = _steps(data.get("steps"), where, stage_names, problems)
    if problems:
        raise UsageError(*problems)
    return PipelineSpec(path, name, inputs, os.path.normpath(output), defaults, steps)


def _steps(raw: Any, where: str, stage_names: dict[str, Any], problems: list[str]) -> list[StepSpec]:
    if not isinstance(raw, list) or not raw:
        problems.append(f"{where}: steps must be a list of steps, each with name: and stage:")
        return []
    steps: list[StepSpec] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        at = f"{where}: steps[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{at}: a step is a mapping with name:, stage: and the stage's options")
            continue
        options = {str(k).replace("-", "_"): v for k, v in item.items()}
        name = options.pop("name", None)
        if not isinstance(name, str) or not STEP_NAME.match(name):
            problems.append(f"{at}: name {name!r}: give each step a name of letters, digits, '_' and '-'")
            continue
        at = f"{where}: step {name}"
        if name in seen:
            problems.append(f"{at}: the name is used by an earlier step; step names must be unique")
            continue
        seen.add(name)
        stage_text = options.pop("stage", None)
        words = stage_text.split() if isinstance(stage_text, str) else []
        if not words or len(words) > 2:
            problems.append(f"{at}: stage must be a stage name, with its action where it has one (convert hf2mcore)")
            continue
        stage, action = words[0], (words[1] if len(words) == 2 else None)
        if "action" in options:
            if action is not None:
                problems.append(f"{at}: the action is in stage: already; drop action:")
                continue
            action = str(options.pop("action"))
        if stage not in stage_names or stage == "pipeline":
            problems.append(f"{at}: unknown stage '{stage}'; one of {', '.join(stage_names)}")
            continue
        if stage in NOT_STEPS:
            problems.append(f"{at}: {stage} cannot be a step: {NOT_STEPS[stage]}")
            continue
        extra = options.pop("extra_args", None) or []
        if not isinstance(extra, list) or not all(isinstance(v, (str, int, float)) for v in extra):
            problems.append(f"{at}: extra_args must be a list of MindSpeed-LLM arguments")
            extra = []
        for key in list(options):
            if key in REFUSED_OPTIONS:
                problems.append(f"{at}: '{key}': {REFUSED_OPTIONS[key]}")
                options.pop(key)
        steps.append(StepSpec(index, name, stage, action, options, [str(v) for v in extra]))
    return steps


Lookup = Callable[[str], Any]


def substitute(value: Any, lookup: Lookup) -> Any:
    """Resolve ``${...}`` in a value (strings, and strings inside lists); ``$${`` is a literal ``${``.

    A string that is exactly one reference takes the referenced value as it is (an int stays an int);
    elsewhere the value is written into the string. ``lookup`` raises KeyError with the reason."""
    if isinstance(value, list):
        return [substitute(v, lookup) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value
    parts = value.split(LITERAL)
    whole = REFERENCE.fullmatch(value)
    if whole and len(parts) == 1:
        return lookup(whole.group(1).strip())

    def one(match: re.Match) -> str:
        found = lookup(match.group(1).strip())
        if isinstance(found, (list, dict)) or found is None:
            raise KeyError(f"${{{match.group(1)}}} is {'empty' if found is None else 'a list'}; it cannot go into text")
        return str(found)

    return "${".join(REFERENCE.sub(one, part) for part in parts)


def references(value: Any) -> list[str]:
    """The references a value makes (to find which steps a step depends on)."""
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    if not isinstance(value, str):
        return []
    return [m.group(1).strip() for part in value.split(LITERAL) for m in REFERENCE.finditer(part)]

"""Model presets: one YAML data file per model, so adding a model never touches code.

A preset holds the model flags (identical in every stage, because the converted checkpoint was
built with them) and each stage's default parallel layout, batch and optimisation flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ascend_llm.errors import UsageError
from ascend_llm.yamlfile import DuplicateKey, load_yaml

PRESET_DIR = Path(__file__).resolve().parent / "presets"
TRAINING_STAGES = ("pretrain", "sft", "lora")
PRESET_STAGES = ("pretrain", "sft", "lora", "generate", "evaluate")
LAYOUT_KEYS = {
    "tp",
    "pp",
    "cp",
    "vpp",
    "nproc_per_node",
    "nnodes",
    "mbs",
    "gbs",
    "seq_length",
    "train_iters",
    "save_interval",
    "lr",
    "max_new_tokens",
    "flags",
    "env",
}
REQUIRED_MODEL_FLAGS = ("num-layers", "hidden-size", "num-attention-heads", "num-query-groups")


@dataclass
class StageDefaults:
    """A preset's defaults for one stage (None where the preset says nothing)."""

    values: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        """Return the preset value for ``key`` or ``default``."""
        value = self.values.get(key)
        return default if value is None else value


@dataclass
class Preset:
    """One model: its identity, size, model flags and per-stage defaults."""

    name: str
    description: str
    hf_model_type: str
    params_billion: float
    params_dtype: str
    model_flags: dict[str, Any]
    stages: dict[str, StageDefaults]
    hf_config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    path: Path | None = None

    def stage(self, name: str) -> StageDefaults:
        """Defaults for stage ``name`` (empty when the preset has none)."""
        return self.stages.get(name, StageDefaults())

    def int_flag(self, flag: str) -> int:
        """An integer model flag such as ``num-layers``."""
        return int(self.model_flags[flag])

    @property
    def num_layers(self) -> int:
        return self.int_flag("num-layers")

    @property
    def num_heads(self) -> int:
        return self.int_flag("num-attention-heads")

    @property
    def num_query_groups(self) -> int:
        return self.int_flag("num-query-groups")


def _fail(path: Path, message: str) -> UsageError:
    return UsageError(f"preset {path}: {message}")


def load_preset_file(path: Path) -> Preset:
    """Parse and validate one preset file; every problem is one line naming the file."""
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except DuplicateKey as exc:
        raise _fail(path, str(exc.problem)) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _fail(path, f"cannot be read: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise _fail(path, "must be a YAML mapping")
    for key in ("name", "hf_model_type", "params_billion", "model_flags"):
        if key not in data:
            raise _fail(path, f"missing key '{key}'")
    flags = data["model_flags"]
    if not isinstance(flags, dict):
        raise _fail(path, "'model_flags' must be a mapping of flag -> value")
    for flag in REQUIRED_MODEL_FLAGS:
        if flag not in flags:
            raise _fail(path, f"model_flags lacks '{flag}' (preflight needs it)")
    stages: dict[str, StageDefaults] = {}
    for stage_name, raw in (data.get("stages") or {}).items():
        if stage_name not in PRESET_STAGES:
            raise _fail(path, f"unknown stage '{stage_name}' (known: {', '.join(PRESET_STAGES)})")
        if not isinstance(raw, dict):
            raise _fail(path, f"stages.{stage_name} must be a mapping")
        unknown = sorted(set(raw) - LAYOUT_KEYS)
        if unknown:
            raise _fail(
                path, f"stages.{stage_name} has unknown keys {unknown} (known: {', '.join(sorted(LAYOUT_KEYS))})"
            )
        values = {k: v for k, v in raw.items() if k not in ("flags", "env")}
        env = {str(k): str(v) for k, v in (raw.get("env") or {}).items()}
        stages[stage_name] = StageDefaults(values=values, flags=dict(raw.get("flags") or {}), env=env)
    return Preset(
        name=str(data["name"]),
        description=str(data.get("description", "")),
        hf_model_type=str(data["hf_model_type"]),
        params_billion=float(data["params_billion"]),
        params_dtype=str(data.get("params_dtype", "bf16")),
        model_flags=dict(flags),
        stages=stages,
        hf_config=dict(data.get("hf_config") or {}),
        notes=[str(n) for n in data.get("notes") or []],
        path=path,
    )


def preset_dirs() -> list[Path]:
    """Built-in presets plus any directories in ``ASCEND_LLM_PRESET_PATH`` (colon-separated)."""
    extra = [Path(p) for p in os.environ.get("ASCEND_LLM_PRESET_PATH", "").split(os.pathsep) if p]
    return [*extra, PRESET_DIR]


def available_presets() -> dict[str, Path]:
    """Map preset name (file stem) to its file; earlier directories win."""
    found: dict[str, Path] = {}
    for directory in reversed(preset_dirs()):
        if directory.is_dir():
            for file in sorted(directory.glob("*.yaml")):
                found[file.stem] = file
    return dict(sorted(found.items(), key=lambda item: _size_key(item[0])))


def _size_key(name: str) -> tuple:
    """Sort qwen3-0.6b before qwen3-14b: by family, then by the numeric size."""
    family, _, size = name.rpartition("-")
    try:
        return (family, float(size.rstrip("bB")), name)
    except ValueError:
        return (family, float("inf"), name)


def load_preset(name_or_path: str) -> Preset:
    """Load a preset by name (``qwen3-14b``) or by the path of a YAML file."""
    if name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            there = "a directory" if path.is_dir() else "nothing"
            raise UsageError(f"--model {name_or_path}: expected a preset YAML file, found {there}")
        return load_preset_file(path)
    presets = available_presets()
    key = name_or_path.lower()
    if key not in presets:
        raise UsageError(
            f"--model {name_or_path}: unknown model; choose one of {', '.join(presets)} or pass a preset YAML file"
        )
    return load_preset_file(presets[key])

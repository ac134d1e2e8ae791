"""Which MindSpeed-LLM release the image carries, and what differs between releases.

What differs lives in one data table per release, ``releases/<version>.yaml``: the entry script of
each command, the flags a release adds, drops or renames, its defaults, its parallel layouts for
the built-in presets and what its checkpoints look like. A table ``inherits`` the previous
release's and says only what that release's Qwen3 examples change, so supporting a new release is
adding a table. Releases without Qwen3 support are refused in one line.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ascend_llm.errors import UsageError
from ascend_llm.presets import PRESET_DIR, Preset, StageDefaults
from ascend_llm.script import Arg, args_from
from ascend_llm.system import sysroot_path

STACK_JSON = "/etc/ascend-llm-stack/stack.json"
DEFAULT_RELEASE = "2.1.0"
RELEASE_DIR = Path(__file__).resolve().parent / "releases"
COMMANDS = (
    "convert hf2mcore",
    "convert mcore2hf",
    "convert mcore2mcore",
    "convert lora-merge",
    "convert lora-merge --to mcore",
    "preprocess",
    "pretrain",
    "sft",
    "lora",
    "generate",
    "evaluate",
)
TABLE_KEYS = {"release", "inherits", "tag", "commit", "megatron", "defaults", "checkpoint", "commands", "layouts"}
COMMAND_KEYS = {"entry", "add", "remove", "rename", "unsupported", "copy_hf_config"}
CHECKPOINT_FORMATS = ("torch", "torch_dist")
_PLACEHOLDER = re.compile(r"^\{(\w+)\}$")

UNSUPPORTED: dict[str, str] = {
    "1.0.0": "MindSpeed-LLM 1.0.0 has no Qwen3 support (no qwen3_spec, Megatron core_r0.6.0)",
    "2.0.0": "MindSpeed-LLM 2.0.0 has no Qwen3 support (Qwen3 arrived in 2.1.0)",
}


@dataclass(frozen=True)
class Command:
    """How one release runs one command: its entry script and the changes to the composed flags.

    ``add`` maps a flag to True (a switch), a value, a list of values or ``"{name}"`` (the stage's
    value of that name; the flag is left out when it has none); an added flag replaces a composed
    one of the same name. ``unsupported`` maps an ascend-llm option to why this release cannot
    take it."""

    key: str
    entry: str
    add: Mapping[str, Any] = field(default_factory=dict)
    remove: Sequence[str] = ()
    rename: Mapping[str, str] = field(default_factory=dict)
    unsupported: Mapping[str, str] = field(default_factory=dict)
    copy_hf_config: bool = False

    def passes(self, flag: str) -> bool:
        """Whether the release's command line carries ``flag`` (as composed by the stage)."""
        return flag not in self.remove and flag not in self.rename

    def apply(self, args: list[Arg], values: Mapping[str, Any]) -> list[Arg]:
        """Drop, rename and add flags, in that order; the composed order is kept."""
        out = [Arg(self.rename.get(a.flag, a.flag), a.values) for a in args if a.flag not in self.remove]
        added: list[tuple[str, Any]] = []
        for flag, value in self.add.items():
            match = _PLACEHOLDER.match(value) if isinstance(value, str) else None
            added.append((flag, values.get(match.group(1)) if match else value))
        for arg in args_from(added):
            at = next((i for i, a in enumerate(out) if a.flag == arg.flag), None)
            if at is None:
                out.append(arg)
            else:
                out[at] = arg
        return out


@dataclass(frozen=True)
class CheckpointRules:
    """What a release's Megatron checkpoints look like on disk, and which formats it reads.

    ``forced``: the format MindSpeed-LLM sets whatever the command says (2.1.0-26.0.0 force
    ``torch``, the iter_*/mp_rank_* folders); None when Megatron's --ckpt-format decides (26.1.0).
    ``megatron_default``: what Megatron writes without --ckpt-format. Converters always read
    ``torch`` only."""

    forced: str | None
    megatron_default: str

    def training_reads(self, ckpt_format: str | None) -> tuple[str, ...]:
        """Formats training and inference load when the command passes ``--ckpt-format ckpt_format``."""
        if self.forced:
            return (self.forced,)
        return ("torch", "torch_dist") if (ckpt_format or self.megatron_default) == "torch_dist" else ("torch",)


@dataclass(frozen=True)
class Release:
    """What the stage runner must do differently for one MindSpeed-LLM release."""

    version: str
    tag: str
    commit: str
    megatron: str
    qwen3_prompt_type: str
    enable_thinking: str | None
    checkpoint: CheckpointRules
    commands: Mapping[str, Command]
    layouts: Mapping[str, Mapping[str, Mapping[str, Any]]]

    def command(self, key: str) -> Command:
        """The command ``key`` (one of COMMANDS) on this release."""
        return self.commands[key]

    def preset(self, preset: Preset) -> Preset:
        """A built-in preset with this release's layouts applied (users' own presets stay as written)."""
        overrides = self.layouts.get(preset.name)
        if not overrides or preset.path is None or preset.path.parent != PRESET_DIR:
            return preset
        stages = dict(preset.stages)
        for stage, change in overrides.items():
            base = preset.stage(stage)
            values = {k: v for k, v in change.items() if k not in ("flags", "env")}
            stages[stage] = StageDefaults(
                values=merge(base.values, values),
                flags=merge(base.flags, change.get("flags") or {}),
                env=merge(base.env, change.get("env") or {}),
            )
        return replace(preset, stages=stages)


def merge(base: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    """``change`` over ``base``: mappings merge key by key, None deletes a key, anything else replaces."""
    out = dict(base)
    for key, value in change.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _fail(path: Path, message: str) -> UsageError:
    return UsageError(f"release table {path.name}: {message}; the ascend-llm package is damaged, reinstall it")


@functools.lru_cache(maxsize=None)
def _raw_tables() -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every table as written (package data: read once per process)."""
    tables: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(RELEASE_DIR.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise _fail(path, f"cannot be read ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict) or str(data.get("release")) != path.stem:
            raise _fail(path, f"must be a mapping with release: {path.stem}")
        unknown = sorted(set(data) - TABLE_KEYS)
        if unknown:
            raise _fail(path, f"unknown keys {unknown}")
        tables[path.stem] = (path, data)
    return tables


def _resolved(version: str, tables: dict[str, tuple[Path, dict[str, Any]]], seen: tuple = ()) -> dict[str, Any]:
    path, data = tables[version]
    parent = data.get("inherits")
    if parent is None:
        return dict(data)
    parent = str(parent)
    if parent not in tables or parent in seen:
        raise _fail(path, f"inherits {parent!r}, which is not a release table (or inherits back)")
    return merge(_resolved(parent, tables, (*seen, version)), {k: v for k, v in data.items() if k != "inherits"})


def _command(path: Path, key: str, raw: Any) -> Command:
    if not isinstance(raw, dict) or not raw.get("entry"):
        raise _fail(path, f"commands.{key} needs an entry script")
    unknown = sorted(set(raw) - COMMAND_KEYS)
    if unknown:
        raise _fail(path, f"commands.{key} has unknown keys {unknown}")
    return Command(
        key=key,
        entry=str(raw["entry"]),
        add=dict(raw.get("add") or {}),
        remove=tuple(raw.get("remove") or ()),
        rename=dict(raw.get("rename") or {}),
        unsupported={str(k): str(v) for k, v in (raw.get("unsupported") or {}).items()},
        copy_hf_config=bool(raw.get("copy_hf_config")),
    )


@functools.lru_cache(maxsize=None)
def load_release(version: str) -> Release:
    """The release table ``version``, with what it inherits applied; raises KeyError if there is none."""
    tables = _raw_tables()
    if version not in tables:
        raise KeyError(version)
    path = tables[version][0]
    data = _resolved(version, tables)
    commands = data.get("commands") or {}
    missing = [key for key in COMMANDS if key not in commands]
    if missing:
        raise _fail(path, f"commands lack {missing}")
    checkpoint = data.get("checkpoint") or {}
    for key in ("forced", "megatron_default"):
        if checkpoint.get(key) not in (*CHECKPOINT_FORMATS, None):
            raise _fail(path, f"checkpoint.{key} must be one of {CHECKPOINT_FORMATS}")
    defaults = data.get("defaults") or {}
    thinking = defaults.get("enable_thinking")
    return Release(
        version=version,
        tag=str(data.get("tag") or f"v{version}"),
        commit=str(data.get("commit") or ""),
        megatron=str(data.get("megatron") or ""),
        qwen3_prompt_type=str(defaults.get("prompt_type") or "qwen"),
        enable_thinking=None if thinking is None else str(thinking).lower(),
        checkpoint=CheckpointRules(
            forced=checkpoint.get("forced"), megatron_default=checkpoint.get("megatron_default") or "torch"
        ),
        commands={key: _command(path, key, raw) for key, raw in commands.items() if key in COMMANDS},
        layouts=data.get("layouts") or {},
    )


def known_releases() -> list[str]:
    """Versions that have a table, oldest first."""
    return sorted(_raw_tables(), key=lambda v: tuple(int(p) for p in v.split(".") if p.isdigit()))


def read_stack() -> dict[str, Any] | None:
    """The image's resolved matrix row, or None outside an image (e.g. on a laptop)."""
    path = sysroot_path(STACK_JSON)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable ({exc}); the image is damaged, rebuild it") from None
    return data if isinstance(data, dict) else None


def image_release(stack: dict[str, Any] | None) -> str | None:
    """``mindspeed_llm.release`` from stack.json, if present."""
    if not stack:
        return None
    value = (stack.get("mindspeed_llm") or {}).get("release")
    return str(value) if value else None


def resolve_release(requested: str | None, stack: dict[str, Any] | None) -> Release:
    """Pick the release: --release, else stack.json, else 2.1.0; refuse unsupported ones."""
    version = requested or image_release(stack) or DEFAULT_RELEASE
    try:
        return load_release(version)
    except KeyError:
        pass
    reason = UNSUPPORTED.get(version, f"MindSpeed-LLM {version} is not a release ascend-llm knows")
    raise UsageError(f"unsupported: {reason}; this ascend-llm supports {', '.join(known_releases())}")

"""Preflight rules: the classic mistakes, caught before any NPU is allocated.

Each rule returns problems, one line each, that name the fix. Rules only read directory listings,
small headers and JSON files, so a full preflight takes well under a second.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from ascend_llm import checkpoint
from ascend_llm.presets import Preset
from ascend_llm.release import Release
from ascend_llm.system import mindspeed_llm_home, npu_device_ids, visible_npu_count

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
GB = 1024**3
BYTES_PER_PARAM = {"weights": 2, "training": 14}
"""bf16 weights: 2 bytes/param; a training checkpoint adds fp32 master weights and two Adam moments."""


def q(path: Any) -> str:
    """Show a path the way a user would paste it."""
    return str(path)


def found(path: Any) -> str:
    """What is at ``path``, as an error message says it: a file, a directory, nothing, or a special file."""
    if os.path.isdir(path):
        return "a directory"
    if os.path.isfile(path):
        return "a file"
    if os.path.lexists(path):
        return "a broken link" if os.path.islink(path) else "a special file"
    return "nothing"


def expect(path: Any, option: str, want: str, fix: str = "") -> list[str]:
    """``option`` names ``want`` (``file``, ``directory`` or ``file or directory``); else one line saying
    what was expected and what is there."""
    there = found(path)
    if there != "nothing" and there[2:] in want.split(" or "):
        return []
    article = "an" if want[0] in "aeiou" else "a"
    return [f"{option} {path}: expected {article} {want}, found {there}{'; ' + fix if fix else ''}"]


def path_exists(path: str | None, option: str, what: str, fix: str = "") -> list[str]:
    """``option`` names an existing ``what`` (``file``, ``directory`` or ``file or directory``)."""
    return expect(path, option, what, fix) if path else []


def tokenizer_dir(path: str | None, option: str = "--tokenizer") -> list[str]:
    """The tokenizer directory exists and holds a HuggingFace tokenizer."""
    if not path:
        return []
    p = Path(path)
    wrong = expect(
        p, option, "directory", "pass the HF model directory (it holds tokenizer.json / tokenizer_config.json)"
    )
    if wrong:
        return wrong
    if not any((p / name).is_file() for name in TOKENIZER_FILES):
        return [
            f"{option} {path} holds no tokenizer ({', '.join(TOKENIZER_FILES)}); pass the "
            f"original HuggingFace model directory"
        ]
    return []


def not_writable(option: str, path: str, probe: Path) -> str:
    """Why this process cannot write ``probe``, and the fix, in one line: the image runs as a non-root
    user (HwHiAiUser, uid/gid 1000 by default), so a volume the host's root owns refuses it."""
    uid, gid = os.getuid(), os.getgid()
    try:
        st, read_only = os.stat(probe), bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
    except OSError:
        st, read_only = None, False
    if read_only:
        return (
            f"{option} {path}: {probe} is on a read-only mount; mount a writable volume there "
            f"(docker run -v HOST_DIR:{path}, without :ro) or choose another directory"
        )
    owner = f"; it is owned by {st.st_uid}:{st.st_gid}, mode {st.st_mode & 0o7777:04o}" if st else ""
    return (
        f"{option} {path}: {probe} is not writable by this container's user (uid {uid}, gid {gid}{owner}): "
        f"mount a directory that user may write (docker run -v HOST_DIR:{path}; on the host: "
        f"sudo chown -R {uid}:{gid} HOST_DIR) or run the container with --user root"
    )


def writable_dir(path: str | None, option: str, need_bytes: int = 0) -> list[str]:
    """The directory (or its nearest existing parent) is writable and has room for the output."""
    if not path:
        return []
    p = Path(path)
    if p.exists() and not p.is_dir():
        return [f"{option} {path}: expected a directory, found {found(p)}"]
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return [f"{option} {path}: {probe} is {found(probe)}, so nothing can be created under it; choose another path"]
    if not os.access(probe, os.W_OK | os.X_OK):
        return [not_writable(option, path, probe)]
    if need_bytes:
        free = shutil.disk_usage(probe).free
        if free < need_bytes:
            return [
                f"{option} {path}: needs about {need_bytes / GB:.1f} GB for the checkpoint but only "
                f"{free / GB:.1f} GB are free on {probe}; free space or choose another volume"
            ]
    return []


def checkpoint_bytes(preset: Preset | None, kind: str, saves: int = 1) -> int:
    """Estimated size of what a stage writes (``weights`` or a ``training`` checkpoint)."""
    if preset is None:
        return 0
    return int(preset.params_billion * 1e9 * BYTES_PER_PARAM[kind] * max(saves, 1))


def reshard_command(preset: Preset | None, load: str, tp: int, pp: int) -> str:
    """The command that converts ``load`` to the layout a stage needs."""
    model = f" --model {preset.name}" if preset else ""
    target = f"{load.rstrip('/')}-tp{tp}pp{pp}"
    return f"ascend-llm convert mcore2mcore{model} --load {load} --save {target} --tp {tp} --pp {pp}"


TORCH_ONLY = (
    "ascend-llm convert and MindSpeed-LLM's convert_ckpt*.py read only the torch format (iter_*/mp_rank_* "
    "folders), which Megatron writes with --ckpt-format torch"
)


def loadable_formats(release: Release | None, command_format: str | None) -> tuple[tuple[str, ...], str]:
    """The checkpoint formats training and inference load on ``release`` when the command passes
    ``--ckpt-format command_format``, and why the others are refused (with the fix)."""
    if release is None:
        return ("torch",), TORCH_ONLY
    rules = release.checkpoint
    reads = rules.training_reads(command_format)
    if rules.forced:
        why = (
            f"MindSpeed-LLM {release.version} forces --ckpt-format {rules.forced} and loads only that format; "
            f"save the checkpoint with --ckpt-format torch where it was made (Megatron core_v0.12.1 and "
            f"MindSpeed-LLM 26.1.0 default to torch_dist)"
        )
    else:
        why = (
            f"this command passes --ckpt-format {command_format or rules.megatron_default}, which loads only "
            f"the torch format: add `-- --ckpt-format torch_dist` to load it (what it saves is then torch_dist "
            f"too, which ascend-llm convert cannot read)"
        )
    return reads, why


def _read_checkpoint(
    load: str,
    option: str,
    hint: Callable[[checkpoint.NotACheckpoint], str],
    formats: Sequence[str] = ("torch",),
    unreadable: str = TORCH_ONLY,
) -> tuple[checkpoint.Layout | None, list[str]]:
    """``load``'s layout, or the one-line problem; ``hint`` says how to fix a non-checkpoint,
    ``unreadable`` why a checkpoint of a format not in ``formats`` cannot be used."""
    path = Path(load)
    wrong = expect(path, option, "directory")
    if wrong:
        return None, wrong
    try:
        layout = checkpoint.read_layout(path)
    except checkpoint.NotACheckpoint as exc:
        return None, [f"{option} {load} {exc}; {hint(exc)}"]
    if layout.format not in formats:
        return None, [
            f"{option} {load} is {layout.describe()} ({layout.directory.name}/ has no mp_rank_* folders); {unreadable}"
        ]
    return layout, []


def _incomplete(load: str, option: str, layout: checkpoint.Layout) -> list[str]:
    """Every mp_rank_* folder of the latest iteration holds its model_optim_rng.pt."""
    missing = checkpoint.missing_shards(layout)
    if not missing:
        return []
    return [
        f"{option} {load}: {layout.directory.name}/ lacks model_optim_rng.pt in {', '.join(missing[:4])}"
        f"{' ...' if len(missing) > 4 else ''}; the checkpoint is incomplete, convert or copy it again"
    ]


def checkpoint_layout(
    load: str | None,
    tp: int,
    pp: int,
    preset: Preset | None,
    option: str = "--load",
    convert_hint: str = "",
    formats: tuple[tuple[str, ...], str] = (("torch",), TORCH_ONLY),
) -> list[str]:
    """The latest iteration's mp_rank_* folders match --tp/--pp (else print the re-shard command).
    ``formats`` is what the stage loads (see ``loadable_formats``); a distributed checkpoint it
    loads is re-sharded by Megatron, so its split is not checked."""
    if not load:
        return []

    def hint(exc: checkpoint.NotACheckpoint) -> str:
        model = preset.name if preset else "MODEL"
        source = load if exc.hf else "HF_DIR"
        target = f"{load.rstrip('/')}-mcore-tp{tp}pp{pp}" if exc.hf else load
        return convert_hint or (
            f"convert it first: ascend-llm convert hf2mcore --model {model} "
            f"--load {source} --save {target} --tp {tp} --pp {pp}"
        )

    layout, problems = _read_checkpoint(load, option, hint, *formats)
    if layout is None or layout.format != "torch":
        return problems
    if (layout.tp, layout.pp) != (tp, pp):
        return [
            f"{option} {load} is split {layout.describe()} but this run uses TP{tp} PP{pp}; "
            f"re-shard it: {reshard_command(preset, load, tp, pp)}  (or pass --tp {layout.tp} --pp {layout.pp})"
        ]
    return _incomplete(load, option, layout)


def checkpoint_layout_any(load: str | None, option: str, hint: str) -> list[str]:
    """``load`` is a complete Megatron checkpoint, whatever its split."""
    if not load:
        return []
    layout, problems = _read_checkpoint(load, option, lambda _exc: hint)
    return problems if layout is None else _incomplete(load, option, layout)


def same_layout(base: str | None, lora: str | None) -> list[str]:
    """A LoRA checkpoint must be split like the base checkpoint it was trained on."""
    if not base or not lora:
        return []
    try:
        a = checkpoint.read_layout(Path(base))
        b = checkpoint.read_layout(Path(lora))
    except (checkpoint.NotACheckpoint, OSError):
        return []
    if a.format == b.format == "torch" and (a.tp, a.pp) != (b.tp, b.pp):
        return [
            f"--lora-load {lora} is split {b.describe()} but the base --load {base} is {a.describe()}; "
            f"LoRA weights must be split like their base: load the base checkpoint the LoRA run used"
        ]
    return []


def divisibility(
    preset: Preset,
    tp: int,
    pp: int,
    cp: int,
    world: int,
    vpp: int | None = None,
    mbs: int | None = None,
    gbs: int | None = None,
    seq_length: int | None = None,
    sequence_parallel: bool = False,
) -> list[str]:
    """Megatron's layout rules, checked before launch instead of after NPU allocation."""
    problems: list[str] = []
    model_parallel = tp * pp * cp
    if world % model_parallel:
        problems.append(
            f"world size {world} (nodes x --nproc-per-node) is not divisible by TP{tp} x PP{pp} x "
            f"CP{cp} = {model_parallel}; change --nproc-per-node/--nnodes or the layout"
        )
    layers = preset.num_layers
    if layers % pp:
        good = [d for d in range(1, layers + 1) if layers % d == 0 and d <= 16]
        problems.append(f"{preset.name} has {layers} layers, not divisible by --pp {pp}; use one of {good}")
    elif vpp and (layers // pp) % vpp:
        problems.append(f"--vpp {vpp} must divide the {layers // pp} layers per pipeline stage")
    heads, groups = preset.num_heads, preset.num_query_groups
    parts = ([f"{heads} attention heads"] if heads % tp else []) + ([f"{groups} query groups"] if groups % tp else [])
    if parts:
        good = [d for d in range(1, groups + 1) if groups % d == 0 and heads % d == 0]
        problems.append(f"{preset.name} has {' and '.join(parts)}, not divisible by --tp {tp}; use --tp in {good}")
    if mbs and gbs and not problems:
        dp = world // model_parallel
        if gbs % (mbs * dp):
            problems.append(
                f"--gbs {gbs} is not divisible by --mbs {mbs} x data-parallel size {dp}; use a multiple of {mbs * dp}"
            )
    if seq_length and sequence_parallel and tp > 1 and seq_length % tp:
        problems.append(f"--seq-length {seq_length} must be divisible by --tp {tp} with --sequence-parallel")
    if seq_length and cp > 1 and seq_length % (2 * cp):
        problems.append(f"--seq-length {seq_length} must be divisible by 2 x --cp {cp}")
    return problems


def layout_possible(preset: Preset, tp: int, pp: int) -> bool:
    """TP divides the heads and query groups and PP the layers: else no checkpoint can have this split,
    and suggesting a re-shard to it would only mislead."""
    return not (preset.num_heads % tp or preset.num_query_groups % tp or preset.num_layers % pp)


def seq_length_fits(preset: Preset, seq_length: int | None, extra: Sequence[str] = ()) -> list[str]:
    """--seq-length within the model's position embeddings (``-- --max-position-embeddings N`` overrides)."""
    limit = preset.model_flags.get("max-position-embeddings")
    if "--max-position-embeddings" in extra[:-1]:
        limit = extra[list(extra).index("--max-position-embeddings") + 1]
    try:
        positions = int(limit) if limit is not None else None
    except ValueError:
        return []
    if seq_length and positions and seq_length > positions:
        return [
            f"--seq-length {seq_length} exceeds {preset.name}'s max-position-embeddings {positions}; "
            f"use --seq-length {positions} or less"
        ]
    return []


def hf_config_matches(hf_dir: str, preset: Preset, option: str = "--load") -> list[str]:
    """The HF config.json is the model the preset describes (right type and size)."""
    config_file = Path(hf_dir) / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"{option} {hf_dir} has no config.json; pass the HuggingFace model directory"]
    except (OSError, ValueError) as exc:
        return [f"{config_file}: unreadable ({exc})"]
    problems = []
    model_type = config.get("model_type")
    if model_type != preset.hf_model_type:
        problems.append(
            f"{config_file} says model_type {model_type!r}, but --model {preset.name} is "
            f"{preset.hf_model_type!r}; pick the matching --model"
        )
        return problems
    wrong = [
        f"{k} {config.get(k)} (preset: {v})" for k, v in preset.hf_config.items() if k in config and config.get(k) != v
    ]
    if wrong:
        problems.append(
            f"{config_file} does not describe {preset.name}: {'; '.join(wrong)}; pick the "
            f"--model that matches these weights"
        )
    return problems


def transformers_knows(model_type: str, stage: str) -> list[str]:
    """The installed transformers has the model type, and a version convert_ckpt.py can parse.
    Found without importing transformers (that alone takes seconds)."""
    try:
        spec = importlib.util.find_spec("transformers")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return []
    try:
        from importlib.metadata import version as dist_version

        version = dist_version("transformers")
    except Exception:
        version = "?"
    location = Path(next(iter(spec.submodule_search_locations)))
    if not (location / "models" / model_type.replace("-", "_")).is_dir():
        return [
            f"transformers {version} does not know model type '{model_type}' (Qwen3 needs >= 4.51.0); "
            f"pip install 'transformers==4.51.0'"
        ]
    if stage == "convert" and not re.fullmatch(r"4\.(\d+)\.(\d+)", version or ""):
        return [
            f"transformers {version}: convert_ckpt.py parses the version as 4.x.y with x >= 31; "
            f"install a release such as transformers==4.51.0"
        ]
    return []


def transformers_missing_note() -> str | None:
    """A note (not a problem) when transformers is not installed here, e.g. on a laptop."""
    try:
        found = importlib.util.find_spec("transformers") is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return None
    return "note: transformers is not installed here, so the model-type check was skipped (the image has it)"


def entry_script(name: str) -> list[str]:
    """The MindSpeed-LLM entry script exists (i.e. this is an ascend-llm-stack image)."""
    home = mindspeed_llm_home()
    if not (home / name).is_file():
        return [
            f"{home / name} not found: run this inside an ascend-llm-stack image, or set "
            f"MINDSPEED_LLM_HOME to a MindSpeed-LLM checkout (use --dry-run to only print the command)"
        ]
    return []


def devices(nproc: int, nnodes: int, dry_run: bool) -> list[str]:
    """Enough NPUs are visible for --nproc-per-node (only checked where device nodes exist)."""
    count = visible_npu_count()
    if not npu_device_ids():
        if dry_run:
            return []
        return [
            "no NPU visible (no /dev/davinciN): pass the devices (--device /dev/davinci0 ... plus "
            "/dev/davinci_manager /dev/devmm_svm /dev/hisi_hdc) or set ASCEND_VISIBLE_DEVICES with the "
            "Ascend Docker Runtime"
        ]
    if nproc > count:
        return [
            f"--nproc-per-node {nproc} but only {count} NPU(s) are visible here; pass more devices or "
            f"lower --nproc-per-node (and the layout with it)"
        ]
    return []


def saves_count(train_iters: int, save_interval: int) -> int:
    """How many checkpoints a run of ``train_iters`` writes."""
    return max(1, math.ceil(train_iters / max(save_interval, 1)))


def lora_args_problems(
    requested: dict[str, Any], recorded: dict[str, Any] | None, lora_dir: str, explicit: Sequence[str]
) -> list[str]:
    """The LoRA arguments of merge/inference equal the ones the LoRA run was trained with."""
    if recorded is None:
        return []
    if "unreadable" in recorded:
        return [
            f"{recorded['unreadable']} is unreadable; delete it or pass --lora-r/--lora-alpha/"
            f"--lora-target-modules as used in training"
        ]
    problems = []
    for key, flag in (
        ("lora_r", "--lora-r"),
        ("lora_alpha", "--lora-alpha"),
        ("lora_target_modules", "--lora-target-modules"),
    ):
        if key not in explicit or key not in recorded:
            continue
        want, have = requested.get(key), recorded.get(key)
        if isinstance(want, list) and isinstance(have, list):
            same = sorted(want) == sorted(have)
        else:
            same = str(want) == str(have)
        if not same:
            shown = " ".join(have) if isinstance(have, list) else have
            problems.append(
                f"{flag} {' '.join(want) if isinstance(want, list) else want} differs from the "
                f"training run of {lora_dir} ({flag} {shown}, recorded in "
                f"{checkpoint.LORA_RECORD}); pass {flag} {shown} or drop the flag"
            )
    return problems

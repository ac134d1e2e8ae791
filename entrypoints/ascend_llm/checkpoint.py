"""Megatron checkpoints on disk: the latest iteration's ``mp_rank_TT[_PPP]`` layout (format
``torch``) or a distributed one (``torch_dist``: metadata.json and *.distcp shards, no rank
folders), and the LoRA arguments ascend-llm records next to a LoRA checkpoint.

Why: a checkpoint converted for TP1/PP8 cannot be loaded with TP8/PP1; upstream then prints
"could not load the checkpoint" and exits 0 after the NPUs were allocated. Reading the folder
names answers the question in milliseconds.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRACKER = "latest_checkpointed_iteration.txt"
LORA_RECORD = "ascend_llm_lora.json"
_MP_RANK = re.compile(r"^mp_rank_(\d{2})(?:_(\d{3}))?(?:_(\d{3}))?$")


@dataclass
class Layout:
    """Tensor/pipeline split of one saved iteration (0 for a distributed checkpoint, which has none)."""

    iteration: str
    tp: int
    pp: int
    ep: int
    directory: Path
    format: str = "torch"

    def describe(self) -> str:
        if self.format != "torch":
            return f"a {self.format} checkpoint"
        ep = f" EP{self.ep}" if self.ep > 1 else ""
        return f"TP{self.tp} PP{self.pp}{ep}"


class NotACheckpoint(Exception):
    """The directory is not a Megatron checkpoint (message says what it looks like instead)."""

    def __init__(self, message: str, hf: bool = False) -> None:
        super().__init__(message)
        self.hf = hf


def is_hf_model_dir(path: Path) -> bool:
    """A HuggingFace model directory: config.json plus weights."""
    if not (path / "config.json").is_file():
        return False
    return any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))


def read_layout(load: Path) -> Layout:
    """The layout of the latest iteration (``format`` torch_dist or torch_dcp when its shards are not
    split by rank folders); raises NotACheckpoint when it is no Megatron checkpoint."""
    tracker = load / TRACKER
    if not tracker.is_file():
        if is_hf_model_dir(load):
            raise NotACheckpoint("is a HuggingFace model, not a Megatron checkpoint", hf=True)
        raise NotACheckpoint(f"has no {TRACKER}, so it is not a Megatron checkpoint")
    text = tracker.read_text(encoding="utf-8", errors="replace").strip()
    if text == "release":
        directory = load / "release"
    elif text.isdigit():
        directory = load / f"iter_{int(text):07d}"
    else:
        raise NotACheckpoint(f"has an unreadable {TRACKER} ({text[:20]!r})")
    if not directory.is_dir():
        raise NotACheckpoint(f"names iteration {text} in {TRACKER} but {directory.name}/ is missing")
    tps, pps, eps = set(), set(), set()
    for entry in os.listdir(directory):
        match = _MP_RANK.match(entry)
        if match and (directory / entry).is_dir():
            tps.add(int(match.group(1)))
            pps.add(int(match.group(2) or 0))
            eps.add(int(match.group(3) or 0))
    if not tps:
        if (directory / "metadata.json").is_file() or any(directory.glob("*.distcp")):
            return Layout(text, tp=0, pp=0, ep=0, directory=directory, format="torch_dist")
        if (directory / ".metadata").is_file():
            return Layout(text, tp=0, pp=0, ep=0, directory=directory, format="torch_dcp")
        raise NotACheckpoint(f"has no mp_rank_* folders in {directory.name}/")
    return Layout(text, tp=len(tps), pp=len(pps), ep=len(eps), directory=directory)


def missing_shards(layout: Layout) -> list[str]:
    """Rank folders of the grid TP x PP that lack their model_optim_rng.pt."""
    missing = []
    for t in range(layout.tp):
        for p in range(layout.pp):
            name = f"mp_rank_{t:02d}" if layout.pp == 1 else f"mp_rank_{t:02d}_{p:03d}"
            if layout.ep > 1:
                continue
            if not (layout.directory / name / "model_optim_rng.pt").is_file():
                missing.append(name)
    return missing


def write_lora_record(save: Path, record: dict[str, Any]) -> Path:
    """Write the LoRA arguments next to the LoRA checkpoint (atomically)."""
    save.mkdir(parents=True, exist_ok=True)
    path = save / LORA_RECORD
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_lora_record(lora_dir: Path) -> dict[str, Any] | None:
    """The recorded LoRA arguments, None when the run was not made by ascend-llm."""
    path = lora_dir / LORA_RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"unreadable": str(path)}
    return data if isinstance(data, dict) else {"unreadable": str(path)}

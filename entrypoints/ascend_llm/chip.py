"""The chip guard: an image holds one chip's kernels; refuse to run it on another chip's host.

From CANN 8.5 one CANN tree holds one chip's ops, and before that the kernels package is per chip
(Ascend-cann-kernels-910b vs Atlas-A3-cann-kernels): an A2 (910B) image on an A3 or 310P host fails
deep in a run with ``Op ... does not has any binary``. The image's chip is ``chip`` in stack.json
(and its ``io.ascend-llm-stack.chip`` label); the host's is the NPU name ``npu-smi info`` prints:

* Atlas A2 (800T A2, 900 A2 PoD): ``910B1`` .. ``910B4`` (also ``910B2C``, ``910B4-1``) -> ``910b``;
* Atlas A3 (800T A3, 900 A3 SuperPoD, "910C"): ``Ascend910``, two chips per NPU, a ``Chip  Phy-ID``
  header; SoC names ``Ascend910_93xx`` -> ``A3``;
* Atlas 300I/300V inference cards: ``310P1`` .. ``310P3`` -> ``310p``; the first Ascend 910
  (Atlas 800 9000): ``910A``, ``910B``, ``910ProB`` -> ``910``.

No NPU visible (a dry run, a CPU stage, a laptop) or no ``npu-smi`` in the container: nothing to
compare, so nothing is refused; ``ascend-llm check`` reports the missing mounts separately.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ascend_llm.system import npu_device_ids, sysroot, sysroot_path

NPU_SMI = "/usr/local/bin/npu-smi"
# matrix.yaml's chip keys: the chips ascend-llm-stack builds training images for.
IMAGE_CHIPS = ("910b", "A3")
TITLES = {
    "910b": "Atlas A2, 910B",
    "A3": "Atlas A3, 910C",
    "310p": "Atlas 300I/300V inference, 310P",
    "910": "Atlas 800 training, the first Ascend 910",
}
_FAMILIES = (
    (re.compile(r"^(Ascend)?910B\d", re.IGNORECASE), "910b"),
    (re.compile(r"^(Ascend)?910(_93\d*)?$", re.IGNORECASE), "A3"),
    (re.compile(r"^(Ascend)?310P\d*", re.IGNORECASE), "310p"),
    (re.compile(r"^(Ascend)?910(A|B|ProA|ProB|PremiumA)$", re.IGNORECASE), "910"),
)
# `| 0     910B3               | OK            | 94.3 ...`: the first line of each NPU's block.
_NPU_ROW = re.compile(r"^\|\s*(\d+)\s+([^\s|]+)\s*\|\s*[^\s|]+\s*\|")


def family(name: str) -> str | None:
    """The chip key of an NPU or SoC name (``910B3`` -> ``910b``, ``Ascend910`` -> ``A3``); None if unknown."""
    for pattern, key in _FAMILIES:
        if pattern.match(name.strip()):
            return key
    return None


def npu_names(text: str) -> list[str]:
    """The NPU names of ``npu-smi info``'s table, one per chip row (A3 lists two chips per NPU)."""
    names = []
    for line in text.splitlines():
        m = _NPU_ROW.match(line.strip())
        if m and not m.group(2).isdigit():
            names.append(m.group(2))
    return names


def host_chip(text: str) -> dict[str, Any] | None:
    """What the host is, from ``npu-smi info``: ``{"name": "910B3", "chip": "910b"}``; None if it lists no NPU."""
    names = npu_names(text)
    if not names:
        return None
    keys = sorted({family(n) or "?" for n in names})
    name = ", ".join(sorted(set(names)))
    return {"name": name, "chip": keys[0] if len(keys) == 1 else "?"}


def run_npu_smi() -> str | None:
    """``npu-smi info``'s output, or None where it is not mounted or fails (no driver here)."""
    mounted = sysroot_path(NPU_SMI)
    exe = str(mounted) if os.access(str(mounted), os.X_OK) else None
    if exe is None and sysroot() == Path("/"):
        exe = shutil.which("npu-smi")  # mounted elsewhere on PATH; never in a test's sysroot
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def image_tag(stack: dict[str, Any], chip: str) -> str:
    """The tag of the same stack built for ``chip`` (render.final_tag's format)."""
    release = (stack.get("mindspeed_llm") or {}).get("release")
    parts = [stack.get("row"), chip, f"torch{stack.get('torch')}", f"mslm{release}", stack.get("os"),
             f"py{stack.get('python')}", stack.get("arch")]  # fmt: skip
    return "ascend-llm-stack:" + "-".join(str(p) for p in parts).lower()


def mismatch(stack: dict[str, Any] | None, host: dict[str, Any] | None) -> str | None:
    """One line refusing an image built for another chip than the host's; None when they agree or
    when there is nothing to compare."""
    if not stack or not host or not stack.get("chip"):
        return None
    want, have = str(stack["chip"]), host["chip"]
    if have.lower() == want.lower():
        return None
    built = f"this image is built for chip {want} ({TITLES.get(want, want)})"
    seen = f"but this host's NPUs are {host['name']} ({TITLES.get(have, 'a chip ascend-llm does not know')})"
    if have in IMAGE_CHIPS:
        row = stack.get("row")
        fix = f"use {image_tag(stack, have)} (invoke build --cann {row} --chip {have})"
    else:
        fix = "ascend-llm-stack builds training images for " + " and ".join(f"{c} ({TITLES[c]})" for c in IMAGE_CHIPS)
    return f"{built} {seen}: its kernels cannot run here; {fix}"


def guard(stack: dict[str, Any] | None) -> list[str]:
    """The chip guard for a stage's preflight: [] without visible NPUs, else [] or the one-line refusal."""
    if not stack or not npu_device_ids():
        return []
    text = run_npu_smi()
    problem = mismatch(stack, host_chip(text)) if text else None
    return [problem] if problem else []

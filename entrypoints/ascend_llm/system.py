"""Where host and image files live, so tests can point the runner at a fake machine.

``ASCEND_LLM_SYSROOT`` (default ``/``) prefixes the absolute system paths the runner reads:
``/dev``, ``/etc/ascend-llm-stack``, ``/usr/local/Ascend``, ``/etc/ascend_install.info``, ...
"""

from __future__ import annotations

import os
import re
from pathlib import Path

MINDSPEED_LLM_HOME_DEFAULT = "/opt/MindSpeed-LLM"
_DAVINCI = re.compile(r"^davinci(\d+)$")


def sysroot() -> Path:
    """The root the system paths are resolved under (``/`` outside tests)."""
    return Path(os.environ.get("ASCEND_LLM_SYSROOT", "/"))


def sysroot_path(absolute: str) -> Path:
    """``absolute`` resolved under the sysroot."""
    return sysroot() / absolute.lstrip("/")


def mindspeed_llm_home() -> Path:
    """The MindSpeed-LLM checkout of the image (``MINDSPEED_LLM_HOME``)."""
    return Path(os.environ.get("MINDSPEED_LLM_HOME", MINDSPEED_LLM_HOME_DEFAULT))


def npu_device_ids() -> list[int]:
    """Indices of the ``/dev/davinciN`` nodes this container sees."""
    dev = sysroot_path("/dev")
    try:
        names = os.listdir(dev)
    except OSError:
        return []
    return sorted(int(m.group(1)) for m in (_DAVINCI.match(n) for n in names) if m)


def parse_device_list(text: str) -> list[int] | None:
    """Parse ``0,1,4-7`` (ASCEND_RT_VISIBLE_DEVICES syntax); None when it is not such a list."""
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            return None
        ids.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return ids


def visible_npu_count() -> int:
    """NPUs a process here can use: the device nodes, narrowed by ASCEND_RT_VISIBLE_DEVICES."""
    count = len(npu_device_ids())
    mask = os.environ.get("ASCEND_RT_VISIBLE_DEVICES")
    if mask:
        ids = parse_device_list(mask)
        if ids is not None:
            count = min(count, len(ids)) if count else 0
    return count

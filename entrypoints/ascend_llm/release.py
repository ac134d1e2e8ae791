"""Which MindSpeed-LLM release the image carries, and what differs between releases.

Stages target 2.1.0. 2.2.0 is handled (its Qwen3 prompt type is ``qwen3`` and its preprocessor
takes ``--enable-thinking``). Releases without Qwen3 support are refused in one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ascend_llm.errors import UsageError
from ascend_llm.system import sysroot_path

STACK_JSON = "/etc/ascend-llm-stack/stack.json"
DEFAULT_RELEASE = "2.1.0"


@dataclass(frozen=True)
class Release:
    """What the stage runner must do differently for one MindSpeed-LLM release."""

    version: str
    qwen3_prompt_type: str
    has_enable_thinking: bool


SUPPORTED: dict[str, Release] = {
    "2.1.0": Release("2.1.0", qwen3_prompt_type="qwen", has_enable_thinking=False),
    "2.2.0": Release("2.2.0", qwen3_prompt_type="qwen3", has_enable_thinking=True),
}

UNSUPPORTED: dict[str, str] = {
    "1.0.0": "MindSpeed-LLM 1.0.0 has no Qwen3 support (no qwen3_spec, Megatron core_r0.6.0)",
    "2.0.0": "MindSpeed-LLM 2.0.0 has no Qwen3 support (Qwen3 arrived in 2.1.0)",
}


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
    if version in SUPPORTED:
        return SUPPORTED[version]
    reason = UNSUPPORTED.get(version, f"MindSpeed-LLM {version} is not a release ascend-llm knows")
    raise UsageError(
        f"unsupported: {reason}; this ascend-llm supports "
        f"{', '.join(SUPPORTED)} (use an image of the 8.1.RC1 or 8.2.RC1 row)"
    )

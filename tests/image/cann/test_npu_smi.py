"""cann layer, tier 2: the host driver mounted into the container answers."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.tier2


def test_npu_smi_info(npu_host: Any) -> None:
    out = npu_host.run("npu-smi info")
    last = (out.stderr.strip().splitlines() or out.stdout.strip().splitlines() or ["no output"])[-1]
    assert out.rc == 0, f"npu-smi info exited {out.rc}: {last}"
    assert "NPU" in out.stdout, f"npu-smi info lists no NPU: {last}"

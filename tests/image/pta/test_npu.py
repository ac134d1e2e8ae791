"""pta layer, tier 2: torch_npu sees the NPUs, computes on them, and HCCL reduces across all of them."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

pytestmark = pytest.mark.tier2

ALL_REDUCE = """
import os, sys
import torch, torch_npu
import torch.distributed as dist
import torch.multiprocessing as mp

def work(rank, world, port):
    torch.npu.set_device(rank)
    dist.init_process_group("hccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    t = torch.full((1024,), float(rank + 1), device=f"npu:{rank}")
    dist.all_reduce(t)
    want = world * (world + 1) / 2
    assert torch.allclose(t.cpu(), torch.full((1024,), want)), (rank, t[:4].tolist(), want)
    dist.destroy_process_group()

if __name__ == "__main__":
    world = torch.npu.device_count()
    mp.spawn(work, args=(world, 29517), nprocs=world, join=True)
    print(f"all-reduce over {world} NPU(s): OK")
"""


def _python(host: Any, code: str, timeout: int = 600) -> Any:
    return host.run(f"timeout {timeout} python -c {shlex.quote(code)}")


def _last(out: Any) -> str:
    return (out.stderr.strip().splitlines() or out.stdout.strip().splitlines() or ["no output"])[-1]


def test_torch_npu_is_available(npu_host: Any) -> None:
    out = _python(npu_host, "import torch, torch_npu; print(torch_npu.npu.is_available())")
    assert out.rc == 0 and out.stdout.strip() == "True", f"torch_npu.npu.is_available() is not True: {_last(out)}"


def test_device_count_equals_the_visible_npus(npu_host: Any) -> None:
    visible = len(npu_host.run("ls /dev | grep -E '^davinci[0-9]+$'").stdout.split())
    mask = npu_host.environment().get("ASCEND_RT_VISIBLE_DEVICES")
    if mask:
        visible = len([d for d in mask.split(",") if d.strip()])
    out = _python(npu_host, "import torch, torch_npu; print(torch.npu.device_count())")
    assert out.rc == 0, f"torch.npu.device_count() failed: {_last(out)}"
    assert int(out.stdout.strip()) == visible, f"torch sees {out.stdout.strip()} NPU(s), {visible} are visible"


def test_matmul_on_the_npu_equals_the_cpu_result(npu_host: Any) -> None:
    code = (
        "import torch, torch_npu\n"
        "torch.manual_seed(0)\n"
        "x, y = torch.randn(256, 256), torch.randn(256, 256)\n"
        "npu = (x.npu() @ y.npu()).cpu()\n"
        "err = (npu - x @ y).abs().max().item()\n"
        "print(err)\n"
        "assert torch.allclose(npu, x @ y, rtol=1e-3, atol=1e-2), err\n"
    )
    out = _python(npu_host, code)
    assert out.rc == 0, f"NPU matmul differs from the CPU's or failed: {_last(out)}"


def test_hccl_all_reduce_over_all_visible_npus(npu_host: Any) -> None:
    # A file, not `python -c`: torch.multiprocessing's spawned workers import the function from it.
    script = "/tmp/ascend-verify-all-reduce.py"
    out = npu_host.run(f"printf %s {shlex.quote(ALL_REDUCE)} > {script} && timeout 900 python {script}")
    assert out.rc == 0 and "OK" in out.stdout, f"HCCL all-reduce failed: {_last(out)}"

"""What ``selftest comm``'s workers and its stage share: the marker, causes and rank spans.

Kept apart from ``comm_worker`` so importing the stage registry never imports the worker module
that torchrun runs with ``--module``.
"""

from __future__ import annotations

import os
from typing import Sequence

MARK = "ascend-llm-selftest "
"""Prefix of the machine-readable lines the workers print (followed by one JSON object)."""


def likely_cause(backend: str, phase: str, error: str, env: dict[str, str] | None = None) -> str:
    """The most probable reason for a failure in ``phase`` with message ``error``, and what to do."""
    env = dict(os.environ if env is None else env)
    text = error.lower()
    ifname = "HCCL_SOCKET_IFNAME" if backend == "hccl" else "GLOO_SOCKET_IFNAME"
    current = env.get(ifname) or env.get("HCCL_IF_IP" if backend == "hccl" else "", "")
    nic = (
        f"the network interface: set {ifname} to the NIC that reaches the other hosts "
        f"(now {current or 'unset: chosen automatically'})"
    )
    if phase == "import":
        if backend == "hccl":
            return "torch_npu cannot load: mount the host driver and devices (run `ascend-llm check`)"
        return "torch cannot be imported in this image"
    if phase == "device":
        return "this rank's NPU cannot be used: check ASCEND_RT_VISIBLE_DEVICES and `npu-smi info`"
    if phase == "check-in":
        return (
            "those ranks never started or crashed at start: read their node's output; every node must start "
            "`selftest comm` within --timeout"
        )
    if phase == "result":
        return "the all-reduce returned wrong data: a faulty link or NPU on the ranks named"
    if backend == "hccl":
        base_port = env.get("HCCL_IF_BASE_PORT", "60000")
        ports = f"HCCL ports {base_port}-{int(base_port) + 31 if base_port.isdigit() else '...'} on every host"
        if "ei0006" in text or "socket" in text or "timeout" in text or "timed out" in text:
            return (
                f"HCCL could not link the NPUs in time: {nic}; open the {ports} (HCCL_IF_BASE_PORT); "
                f"check the NPU NICs (hccn_tool -i N -link -g) and HCCL_CONNECT_TIMEOUT"
            )
        if "port" in text or "address already in use" in text or "unmatched" in text:
            return f"a port clash: another process uses the {ports}; move them with HCCL_IF_BASE_PORT"
        return f"{nic}; open the {ports}; look at the first failing rank's log"
    if any(word in text for word in ("refused", "unreachable", "no route", "connect")):
        return nic
    if "timed out" in text or "timeout" in text or phase == "timeout":
        return f"a peer stopped answering, or {nic}"
    return nic


def spans(ranks: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    out: list[str] = []
    ordered = sorted(ranks)
    start = prev = None
    for r in ordered:
        if start is None:
            start = prev = r
        elif r == prev + 1:
            prev = r
        else:
            out.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = r
    if start is not None:
        out.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(out)

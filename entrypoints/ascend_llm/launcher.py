"""Rendezvous: where torchrun's --nnodes/--node_rank/--master_addr/... come from.

The same ``docker run IMAGE pretrain ...`` must work by hand and under each cluster launcher,
and the launchers disagree on what ``WORLD_SIZE`` and ``RANK`` mean:

* MindCluster (Ascend Operator): ``RANK`` = pod rank, ``WORLD_SIZE`` = total NPUs,
  ``LOCAL_WORLD_SIZE`` = NPUs in this pod.
* Volcano (pytorch plugin): ``RANK`` = pod rank, ``WORLD_SIZE`` = number of pods,
  ``VC_TASK_INDEX`` = pod index inside its task; without the plugin the svc plugin's
  ``VC_<TASK>_NUM`` give the pod count, and ``VC_TASK_INDEX`` is the node rank only in a one-task job;
  ``NPUS_PER_NODE`` (set by ``invoke k8s``) gives the processes per pod.
* Kubeflow PyTorchJob: ``PET_NNODES``, ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``.
* By hand: ``MASTER_ADDR``, ``MASTER_PORT``, ``NNODES``, ``NODE_RANK`` (the upstream scripts' names).

Precedence: command-line flags > launcher environment > config file > model preset > defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ascend_llm.errors import UsageError

KEYS = ("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port")
FLAG_NAMES = {
    "nproc_per_node": "--nproc-per-node",
    "nnodes": "--nnodes",
    "node_rank": "--node-rank",
    "master_addr": "--master-addr",
    "master_port": "--master-port",
}
DEFAULT_MASTER_PORT = 6000
LOCAL_ADDRS = {"localhost", "127.0.0.1", "::1"}


@dataclass
class Rendezvous:
    """The resolved torchrun rendezvous and where each value came from."""

    nproc_per_node: int
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    launcher: str = "none"
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def torchrun_args(self) -> tuple[tuple[str, str], ...]:
        """torchrun's own options, spelled as the upstream scripts spell them."""
        return (
            ("--nproc_per_node", str(self.nproc_per_node)),
            ("--nnodes", str(self.nnodes)),
            ("--node_rank", str(self.node_rank)),
            ("--master_addr", self.master_addr),
            ("--master_port", str(self.master_port)),
        )


def _int(env: Mapping[str, str], name: str, launcher: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw.strip())
    except ValueError:
        raise UsageError(f"{name}={raw!r} (set by {launcher}) is not an integer") from None


def _nnodes(env: Mapping[str, str], name: str, launcher: str) -> int | None:
    """PET_NNODES may be ``N`` or an elastic ``MIN:MAX``; only a fixed size is supported."""
    raw = env.get(name)
    if raw and ":" in raw:
        lo, _, hi = raw.partition(":")
        if lo.strip() != hi.strip():
            raise UsageError(
                f"{name}={raw} asks for an elastic job; ascend-llm needs a fixed node "
                f"count: set min and max replicas equal"
            )
        raw = lo
    return _int({name: raw} if raw is not None else {}, name, launcher)


def _volcano_tasks(env: Mapping[str, str], launcher: str) -> dict[str, int]:
    """The svc plugin's ``VC_<TASK>_NUM`` (older releases: ``VK_``): pods per task, in name order."""
    tasks: dict[str, int] = {}
    for prefix in ("VC_", "VK_"):
        for name in sorted(env):
            if name.startswith(prefix) and name.endswith("_NUM") and len(name) > len(prefix) + 4:
                count = _int(env, name, launcher)
                if count is not None:
                    tasks[name] = count
        if tasks:
            break
    return tasks


def from_environment(env: Mapping[str, str]) -> tuple[str, dict[str, Any], dict[str, str]]:
    """Detect the launcher; return its name, the values it implies and the variables used."""
    values: dict[str, Any] = {}
    used: dict[str, str] = {}

    def put(key: str, value: Any, source: str) -> None:
        if value is not None and value != "":
            values[key] = value
            used[key] = source

    if "PET_NPROC_PER_NODE" in env or "PET_NNODES" in env:
        launcher = "Kubeflow PyTorchJob"
        nproc_raw = env.get("PET_NPROC_PER_NODE", "")
        if nproc_raw and not nproc_raw.strip().isdigit():
            raise UsageError(
                f"PET_NPROC_PER_NODE={nproc_raw} ({launcher}): set nprocPerNode to the "
                f"number of NPUs per pod, or pass --nproc-per-node"
            )
        put("nproc_per_node", _int(env, "PET_NPROC_PER_NODE", launcher), f"PET_NPROC_PER_NODE={nproc_raw}")
        put("nnodes", _nnodes(env, "PET_NNODES", launcher), f"PET_NNODES={env.get('PET_NNODES')}")
        rank_var = "PET_NODE_RANK" if "PET_NODE_RANK" in env else "RANK"
        put("node_rank", _int(env, rank_var, launcher), f"{rank_var}={env.get(rank_var)}")
        world = _int(env, "WORLD_SIZE", launcher)
        nnodes, nproc = values.get("nnodes"), values.get("nproc_per_node")
        if world is not None and nnodes and nproc and world not in (nnodes * nproc, nnodes):
            raise UsageError(
                f"WORLD_SIZE={world} ({launcher}) is neither PET_NNODES x PET_NPROC_PER_NODE = "
                f"{nnodes} x {nproc} nor PET_NNODES = {nnodes}: the job's replicas and nprocPerNode disagree"
            )
    elif "MINDX_TASK_ID" in env or (
        "LOCAL_WORLD_SIZE" in env and "WORLD_SIZE" in env and "VC_TASK_INDEX" not in env and "VK_TASK_INDEX" not in env
    ):
        launcher = "MindCluster"
        local = _int(env, "LOCAL_WORLD_SIZE", launcher)
        world = _int(env, "WORLD_SIZE", launcher)
        put("nproc_per_node", local, f"LOCAL_WORLD_SIZE={local}")
        if world is not None and local:
            if world % local:
                raise UsageError(
                    f"WORLD_SIZE={world} is not a multiple of LOCAL_WORLD_SIZE={local} "
                    f"({launcher}: WORLD_SIZE counts NPUs); give every pod the same NPU count"
                )
            put("nnodes", world // local, f"WORLD_SIZE={world}/LOCAL_WORLD_SIZE={local}")
        put("node_rank", _int(env, "RANK", launcher), f"RANK={env.get('RANK')}")
    elif "VC_TASK_INDEX" in env or "VK_TASK_INDEX" in env:
        launcher = "Volcano"
        tasks = _volcano_tasks(env, launcher)
        if "WORLD_SIZE" in env:
            put("nnodes", _int(env, "WORLD_SIZE", launcher), f"WORLD_SIZE={env.get('WORLD_SIZE')}")
        elif tasks:
            put("nnodes", sum(tasks.values()), "+".join(f"{name}={count}" for name, count in tasks.items()))
        if "RANK" in env:
            put("node_rank", _int(env, "RANK", launcher), f"RANK={env.get('RANK')}")
        else:
            index_var = "VC_TASK_INDEX" if "VC_TASK_INDEX" in env else "VK_TASK_INDEX"
            if len(tasks) > 1:
                raise UsageError(
                    f"{index_var} counts pods inside one task, but this Volcano job has {len(tasks)} tasks "
                    f"({', '.join(tasks)}) and no RANK: enable the job's pytorch plugin (it sets RANK, "
                    f"WORLD_SIZE, MASTER_ADDR) or pass --node-rank"
                )
            put("node_rank", _int(env, index_var, launcher), f"{index_var}={env.get(index_var)}")
        for name in ("NPUS_PER_NODE", "NPROC_PER_NODE"):  # the plugin says nothing about processes per pod
            if name in env:
                put("nproc_per_node", _int(env, name, launcher), f"{name}={env.get(name)}")
                break
    elif any(name in env for name in ("MASTER_ADDR", "NNODES", "NODE_RANK")):
        launcher = "environment"
        put("nnodes", _int(env, "NNODES", launcher), f"NNODES={env.get('NNODES')}")
        put("node_rank", _int(env, "NODE_RANK", launcher), f"NODE_RANK={env.get('NODE_RANK')}")
        for name in ("NPUS_PER_NODE", "NPROC_PER_NODE"):
            if name in env:
                put("nproc_per_node", _int(env, name, launcher), f"{name}={env.get(name)}")
                break
    else:
        return "none", {}, {}
    put("master_addr", env.get("MASTER_ADDR"), f"MASTER_ADDR={env.get('MASTER_ADDR')}")
    put("master_port", _int(env, "MASTER_PORT", launcher), f"MASTER_PORT={env.get('MASTER_PORT')}")
    return launcher, values, used


def resolve_rendezvous(
    flags: Mapping[str, Any],
    config: Mapping[str, Any],
    preset: Mapping[str, Any],
    env: Mapping[str, str],
) -> Rendezvous:
    """Combine the sources (flags > launcher env > config > preset > defaults) and validate."""
    launcher, from_env, used = from_environment(env)
    if launcher == "environment":
        _refuse_process_counts(env, flags, from_env)
    chosen: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in KEYS:
        flag_value = flags.get(key)
        env_value = from_env.get(key)
        if flag_value is not None and env_value is not None and str(flag_value) != str(env_value):
            raise UsageError(
                f"{FLAG_NAMES[key]} {flag_value} disagrees with {launcher} ({used[key]}); drop the flag or fix the job"
            )
        for source, mapping in (("flag", flags), (launcher, from_env), ("config", config), ("preset", preset)):
            if mapping.get(key) is not None:
                chosen[key] = mapping[key]
                sources[key] = used.get(key, source) if source == launcher else source
                break
    rdzv = Rendezvous(
        nproc_per_node=int(chosen.get("nproc_per_node", 1)),
        nnodes=int(chosen.get("nnodes", 1)),
        node_rank=int(chosen.get("node_rank", 0)),
        master_addr=str(chosen.get("master_addr", "localhost")),
        master_port=int(chosen.get("master_port", DEFAULT_MASTER_PORT)),
        launcher=launcher,
        sources=sources,
    )
    validate(rdzv)
    return rdzv


def _refuse_process_counts(env: Mapping[str, str], flags: Mapping[str, Any], from_env: Mapping[str, Any]) -> None:
    """By hand, ``WORLD_SIZE``/``RANK`` without ``NNODES``/``NODE_RANK`` are ambiguous: torch counts
    processes with them, the cluster launchers count pods. Running on as one node would be wrong either way."""
    world, rank = env.get("WORLD_SIZE", "").strip(), env.get("RANK", "").strip()
    if world in ("", "1") and rank in ("", "0"):
        return
    if "nnodes" in from_env or flags.get("nnodes") is not None:
        return
    raise UsageError(
        f"WORLD_SIZE={world or '?'} RANK={rank or '?'} are set but NNODES/NODE_RANK are not: ascend-llm "
        f"counts nodes, so pass --nnodes/--node-rank (or NNODES/NODE_RANK) and --nproc-per-node"
    )


def validate(rdzv: Rendezvous) -> None:
    """Refuse combinations torchrun would hang or fail on, each in one line."""

    def where(key: str) -> str:
        source = rdzv.sources.get(key)
        return f" (from {source})" if source and source not in ("flag", "config") else ""

    if rdzv.node_rank < 0:
        raise UsageError(f"node rank {rdzv.node_rank}{where('node_rank')} must be 0 or more")

    if rdzv.nproc_per_node < 1:
        raise UsageError(f"--nproc-per-node must be at least 1, got {rdzv.nproc_per_node}{where('nproc_per_node')}")
    if rdzv.nnodes < 1:
        raise UsageError(f"--nnodes must be at least 1, got {rdzv.nnodes}{where('nnodes')}")
    if not 0 <= rdzv.node_rank < rdzv.nnodes:
        raise UsageError(
            f"node rank {rdzv.node_rank}{where('node_rank')} is not below nnodes "
            f"{rdzv.nnodes}{where('nnodes')}: node ranks run 0..{rdzv.nnodes - 1}; fix --node-rank or --nnodes"
        )
    if not 0 < rdzv.master_port < 65536:
        raise UsageError(f"--master-port {rdzv.master_port} is not a TCP port (1-65535)")
    if rdzv.nnodes > 1 and rdzv.master_addr in LOCAL_ADDRS:
        raise UsageError(
            f"{rdzv.nnodes} nodes need --master-addr (or MASTER_ADDR) set to the "
            f"rank-0 node's address, reachable from every node; got {rdzv.master_addr}"
        )

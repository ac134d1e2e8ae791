"""More of the rendezvous derivation: each launcher's environment as its operator writes it for pod i
of N, and every refusal, each in one line (the cases test_launcher.py does not cover)."""

from __future__ import annotations

import pytest
from ascend_llm.errors import UsageError
from ascend_llm.launcher import from_environment, resolve_rendezvous

PRESET = {"nproc_per_node": 8, "nnodes": 1}


def rdzv(env, flags=None, preset=PRESET):
    return resolve_rendezvous(flags or {}, {}, preset, env)


def refusal(env, flags=None) -> str:
    with pytest.raises(UsageError) as err:
        rdzv(env, flags)
    assert len(err.value.lines) == 1
    return err.value.lines[0]


# -- what each operator injects into pod i of N ---------------------------------------------------


def mindcluster(i: int, n: int, npus: int = 8) -> dict[str, str]:
    """Ascend Operator: RANK = pod rank, WORLD_SIZE = all NPUs, LOCAL_RANK a comma list."""
    return {
        "MINDX_TASK_ID": "uid",
        "REPLICA_TYPE": "Master" if i == 0 else "Worker",
        "MASTER_ADDR": "10.96.0.7",
        "MASTER_PORT": "2222",
        "RANK": str(i),
        "WORLD_SIZE": str(n * npus),
        "LOCAL_WORLD_SIZE": str(npus),
        "LOCAL_RANK": ",".join(map(str, range(npus))),
        "ASCEND_VISIBLE_DEVICES": ",".join(map(str, range(npus))),
    }


def volcano(i: int, n: int, npus: int = 8) -> dict[str, str]:
    """pytorch + svc + env plugins: WORLD_SIZE = pods, RANK = pod rank, VC_TASK_INDEX within the task."""
    return {
        "MASTER_ADDR": "job-master-0.job",
        "MASTER_PORT": "23456",
        "WORLD_SIZE": str(n),
        "RANK": str(i),
        "VC_TASK_INDEX": str(0 if i == 0 else i - 1),
        "VK_TASK_INDEX": str(0 if i == 0 else i - 1),
        "VC_MASTER_NUM": "1",
        "VC_WORKER_NUM": str(n - 1),
        "VC_MASTER_HOSTS": "job-master-0.job",
        "NPUS_PER_NODE": str(npus),  # written by invoke k8s
    }


def pytorchjob(i: int, n: int, npus: int = 8) -> dict[str, str]:
    """Kubeflow training operator v1: PET_* for torchrun, WORLD_SIZE = pods x nprocPerNode."""
    return {
        "MASTER_ADDR": "job-master-0",
        "MASTER_PORT": "23456",
        "RANK": str(i),
        "PET_NODE_RANK": str(i),
        "WORLD_SIZE": str(n * npus),
        "PET_NNODES": str(n),
        "PET_NPROC_PER_NODE": str(npus),
        "PYTHONUNBUFFERED": "0",
    }


@pytest.mark.parametrize(
    ("make", "name"),
    [(mindcluster, "MindCluster"), (volcano, "Volcano"), (pytorchjob, "Kubeflow PyTorchJob")],
)
@pytest.mark.parametrize(("n", "npus"), [(2, 8), (4, 16), (1, 8)])
def test_every_pod_of_every_launcher_gets_its_own_node_rank(make, name, n, npus) -> None:
    seen = []
    for i in range(n):
        r = rdzv(make(i, n, npus), preset={"nproc_per_node": 8, "nnodes": 1})
        assert r.launcher == name
        assert (r.nnodes, r.nproc_per_node, r.world_size) == (n, npus, n * npus)
        seen.append(r.node_rank)
        assert r.master_addr != "localhost"
    assert seen == list(range(n))


def test_volcano_without_the_pytorch_plugin_counts_pods_from_the_svc_plugin() -> None:
    env = {"VC_TASK_INDEX": "0", "VC_TRAINER_NUM": "3", "MASTER_ADDR": "job-trainer-0.job"}
    r = rdzv(env)
    assert (r.nnodes, r.node_rank) == (3, 0)
    assert r.sources["nnodes"] == "VC_TRAINER_NUM=3"
    two_tasks = {"VC_TASK_INDEX": "0", "VC_MASTER_NUM": "1", "VC_WORKER_NUM": "1", "MASTER_ADDR": "m"}
    assert "VC_TASK_INDEX counts pods inside one task, but this Volcano job has 2 tasks" in refusal(two_tasks)
    with_rank = rdzv({**two_tasks, "VC_TASK_INDEX": "0", "RANK": "1", "WORLD_SIZE": "2"})
    assert (with_rank.nnodes, with_rank.node_rank) == (2, 1)


def test_an_older_pytorchjob_world_size_counting_pods_is_accepted() -> None:
    env = {**pytorchjob(1, 2), "WORLD_SIZE": "2"}
    assert rdzv(env).world_size == 16


@pytest.mark.parametrize(
    ("env", "flags", "needle"),
    [
        (
            mindcluster(4, 4),
            {},
            "node rank 4 (from RANK=4) is not below nnodes 4 (from WORLD_SIZE=32/LOCAL_WORLD_SIZE=8)",
        ),
        ({**mindcluster(0, 2), "LOCAL_WORLD_SIZE": "0"}, {}, "--nproc-per-node must be at least 1, got 0"),
        (mindcluster(0, 2), {"nproc_per_node": 4}, "--nproc-per-node 4 disagrees with MindCluster"),
        (volcano(2, 2), {}, "node rank 2 (from RANK=2) is not below nnodes 2 (from WORLD_SIZE=2)"),
        (volcano(1, 2), {"node_rank": 0}, "--node-rank 0 disagrees with Volcano (RANK=1)"),
        ({**volcano(0, 2), "NPUS_PER_NODE": "eight"}, {}, "NPUS_PER_NODE='eight' (set by Volcano) is not an integer"),
        (pytorchjob(3, 3), {}, "node rank 3 (from PET_NODE_RANK=3) is not below nnodes 3 (from PET_NNODES=3)"),
        (
            {**pytorchjob(0, 2), "WORLD_SIZE": "12"},
            {},
            "WORLD_SIZE=12 (Kubeflow PyTorchJob) is neither PET_NNODES x PET_NPROC_PER_NODE = 2 x 8 nor PET_NNODES",
        ),
        ({k: v for k, v in pytorchjob(1, 2).items() if k != "MASTER_ADDR"}, {}, "2 nodes need --master-addr"),
        (
            {"MASTER_ADDR": "10.0.0.1", "WORLD_SIZE": "2", "RANK": "1"},
            {},
            "WORLD_SIZE=2 RANK=1 are set but NNODES/NODE_RANK are not",
        ),
        (
            {"MASTER_ADDR": "m", "NNODES": "2", "NODE_RANK": "-1"},
            {},
            "node rank -1 (from NODE_RANK=-1) must be 0 or more",
        ),
        ({"MASTER_ADDR": "m", "NNODES": "0"}, {}, "--nnodes must be at least 1, got 0 (from NNODES=0)"),
        ({"MASTER_ADDR": "m", "NNODES": "2", "MASTER_PORT": "0"}, {}, "--master-port 0 is not a TCP port"),
        ({}, {"nnodes": 2, "master_addr": "127.0.0.1"}, "got 127.0.0.1"),
    ],
)
def test_each_refusal_is_one_line(env, flags, needle) -> None:
    assert needle in refusal(env, flags)


def test_by_hand_world_size_and_rank_are_fine_with_explicit_nodes() -> None:
    r = rdzv({"MASTER_ADDR": "10.0.0.1", "WORLD_SIZE": "2", "RANK": "1"}, {"nnodes": 2, "node_rank": 1})
    assert (r.nnodes, r.node_rank, r.master_addr) == (2, 1, "10.0.0.1")
    assert rdzv({"MASTER_ADDR": "10.0.0.1", "WORLD_SIZE": "1", "RANK": "0"}).nnodes == 1


def test_detection_keys() -> None:
    assert from_environment(volcano(0, 2))[0] == "Volcano"  # VC_TASK_INDEX wins over WORLD_SIZE/RANK
    assert from_environment(mindcluster(0, 2))[0] == "MindCluster"
    assert from_environment({**pytorchjob(0, 2), "VC_TASK_INDEX": "0"})[0] == "Kubeflow PyTorchJob"

"""Rendezvous under each launcher: they disagree on what WORLD_SIZE and RANK mean."""

from __future__ import annotations

import pytest
from ascend_llm.errors import UsageError
from ascend_llm.launcher import from_environment, resolve_rendezvous

PRESET = {"nproc_per_node": 8, "nnodes": 1}


def rdzv(env, flags=None, config=None, preset=PRESET):
    return resolve_rendezvous(flags or {}, config or {}, preset, env)


def test_plain_defaults_are_one_local_node() -> None:
    r = rdzv({})
    assert (r.nproc_per_node, r.nnodes, r.node_rank, r.master_addr, r.master_port, r.launcher) == (
        8,
        1,
        0,
        "localhost",
        6000,
        "none",
    )


def test_plain_environment_like_the_upstream_scripts() -> None:
    r = rdzv({"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "6015", "NNODES": "2", "NODE_RANK": "1", "NPUS_PER_NODE": "8"})
    assert (r.nnodes, r.node_rank, r.master_addr, r.master_port, r.world_size) == (2, 1, "10.0.0.1", 6015, 16)


def test_mindcluster_world_size_counts_npus() -> None:
    env = {
        "MINDX_TASK_ID": "job-1",
        "MASTER_ADDR": "svc-master",
        "MASTER_PORT": "2222",
        "RANK": "3",
        "WORLD_SIZE": "32",
        "LOCAL_WORLD_SIZE": "8",
        "LOCAL_RANK": "0,1,2,3,4,5,6,7",
    }
    r = rdzv(env)
    assert r.launcher == "MindCluster"
    assert (r.nproc_per_node, r.nnodes, r.node_rank, r.master_addr, r.master_port) == (8, 4, 3, "svc-master", 2222)


def test_mindcluster_uneven_pods_are_refused() -> None:
    with pytest.raises(UsageError, match="WORLD_SIZE=12 is not a multiple of LOCAL_WORLD_SIZE=8"):
        rdzv({"MINDX_TASK_ID": "j", "WORLD_SIZE": "12", "LOCAL_WORLD_SIZE": "8", "RANK": "0", "MASTER_ADDR": "m"})


def test_volcano_world_size_counts_pods() -> None:
    env = {
        "VC_TASK_INDEX": "0",
        "MASTER_ADDR": "job-master-0.job",
        "MASTER_PORT": "23456",
        "WORLD_SIZE": "4",
        "RANK": "2",
    }
    r = rdzv(env)
    assert r.launcher == "Volcano"
    assert (r.nproc_per_node, r.nnodes, r.node_rank, r.master_port) == (8, 4, 2, 23456)


def test_volcano_without_rank_uses_the_task_index() -> None:
    r = rdzv({"VC_TASK_INDEX": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "m"})
    assert (r.nnodes, r.node_rank) == (2, 1)


def test_kubeflow_pytorchjob() -> None:
    env = {
        "PET_NNODES": "3",
        "PET_NPROC_PER_NODE": "8",
        "PET_NODE_RANK": "2",
        "RANK": "2",
        "WORLD_SIZE": "24",
        "MASTER_ADDR": "job-master-0",
        "MASTER_PORT": "23456",
    }
    r = rdzv(env)
    assert r.launcher == "Kubeflow PyTorchJob"
    assert (r.nproc_per_node, r.nnodes, r.node_rank, r.world_size) == (8, 3, 2, 24)


def test_kubeflow_fixed_elastic_range_and_refusals() -> None:
    assert rdzv({"PET_NNODES": "2:2", "PET_NPROC_PER_NODE": "8", "PET_NODE_RANK": "0", "MASTER_ADDR": "m"}).nnodes == 2
    with pytest.raises(UsageError, match="elastic"):
        rdzv({"PET_NNODES": "1:4", "MASTER_ADDR": "m"})
    with pytest.raises(UsageError, match="PET_NPROC_PER_NODE=auto"):
        rdzv({"PET_NNODES": "1", "PET_NPROC_PER_NODE": "auto"})


@pytest.mark.parametrize(
    ("env", "flags", "needle"),
    [
        (
            {"VC_TASK_INDEX": "0", "WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "m"},
            {},
            "node rank 2 (from RANK=2) is not below nnodes 2 (from WORLD_SIZE=2)",
        ),
        ({}, {"nnodes": 2, "node_rank": 5, "master_addr": "m"}, "node rank 5 is not below nnodes 2"),
        ({}, {"nnodes": 2}, "2 nodes need --master-addr"),
        (
            {"PET_NNODES": "4", "PET_NPROC_PER_NODE": "8", "PET_NODE_RANK": "0", "MASTER_ADDR": "m"},
            {"nnodes": 2},
            "--nnodes 2 disagrees with Kubeflow PyTorchJob (PET_NNODES=4)",
        ),
        ({"NNODES": "two"}, {}, "NNODES='two' (set by environment) is not an integer"),
        ({}, {"master_port": 70000}, "not a TCP port"),
    ],
)
def test_inconsistent_combinations_are_one_line(env, flags, needle) -> None:
    with pytest.raises(UsageError) as err:
        rdzv(env, flags)
    assert needle in err.value.lines[0] and len(err.value.lines) == 1


def test_flags_win_over_the_config_and_agree_with_the_env() -> None:
    env = {"MASTER_ADDR": "m", "NNODES": "2", "NODE_RANK": "1"}
    r = rdzv(env, flags={"nnodes": 2, "master_port": 7000}, config={"master_port": 8000, "node_rank": 0})
    assert (r.nnodes, r.node_rank, r.master_port) == (2, 1, 7000)
    assert r.sources["node_rank"] == "NODE_RANK=1"


def test_detection_order() -> None:
    assert from_environment({"MINDX_TASK_ID": "x", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"})[0] == "MindCluster"
    assert from_environment({"LOCAL_WORLD_SIZE": "8", "WORLD_SIZE": "8", "RANK": "0"})[0] == "MindCluster"
    assert from_environment({"VC_TASK_INDEX": "0", "LOCAL_WORLD_SIZE": "8", "WORLD_SIZE": "8"})[0] == "Volcano"
    assert from_environment({"PET_NNODES": "1", "LOCAL_WORLD_SIZE": "8"})[0] == "Kubeflow PyTorchJob"
    assert from_environment({"WORLD_SIZE": "8", "RANK": "0"})[0] == "none"


def test_launcher_env_reaches_the_torchrun_line(ascend, world, roomy_disk, monkeypatch) -> None:
    from stagekit import parse_launcher

    for name, value in {
        "MINDX_TASK_ID": "j",
        "MASTER_ADDR": "svc",
        "MASTER_PORT": "2222",
        "RANK": "1",
        "WORLD_SIZE": "16",
        "LOCAL_WORLD_SIZE": "8",
    }.items():
        monkeypatch.setenv(name, value)
    result = ascend(
        "sft",
        "--dry-run",
        "--model",
        "qwen3-14b",
        "--load",
        world.checkpoint(8, 1),
        "--save",
        world.out,
        "--data",
        world.sft_data,
        "--tokenizer",
        world.hf,
    )
    assert result.code == 0, result.err
    assert parse_launcher(result.out) == {
        "--nproc_per_node": "8",
        "--nnodes": "2",
        "--node_rank": "1",
        "--master_addr": "svc",
        "--master_port": "2222",
    }
    assert "# rendezvous from MindCluster" in result.out

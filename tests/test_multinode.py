"""``selftest comm`` across two real containers of the integration image, as two hosts would run it.

Each container is one node on a user-defined Docker network (created here, removed afterwards), started
exactly as the README tells a user: ``docker run IMAGE selftest comm --nnodes 2 --node-rank i
--master-addr <node 0> ...``. There is no NPU, so the stage picks gloo on the CPU by itself; the
rendezvous, the check-in, the process group, the all-reduce and the verdict are the real ones.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import pytest

pytestmark = pytest.mark.docker

TIMEOUT = 20  # --timeout of the stage: every phase, and how long node 0 waits for node 1


@pytest.fixture
def network(docker_client: Any) -> Iterator[Any]:
    """A private bridge network; every container started on it is removed with it."""
    net = docker_client.networks.create(f"ascend-selftest-{uuid.uuid4().hex[:8]}", driver="bridge")
    started: list[Any] = []
    net.started = started
    try:
        yield net
    finally:
        for container in started:
            with suppress(Exception):
                container.remove(force=True)
        net.remove()


def node(docker_client: Any, image: str, net: Any, name: str, rank: int, *extra: str, env: dict | None = None) -> Any:
    """``docker run -d --network NET --name NAME IMAGE selftest comm --nnodes 2 --node-rank RANK ...``."""
    master = f"{net.name}-node0"
    container = docker_client.containers.run(
        image,
        ["selftest", "comm", "--nnodes", "2", "--node-rank", str(rank), "--master-addr", master, *extra],
        name=f"{net.name}-{name}",
        hostname=f"{net.name}-{name}",
        network=net.name,
        environment=env or {},
        detach=True,
    )
    net.started.append(container)
    return container


def finish(container: Any, limit: float) -> tuple[int, str, float]:
    """Wait for the container (at most ``limit`` s); return its exit code, its output and the seconds taken."""
    start = time.monotonic()
    status = container.wait(timeout=limit)["StatusCode"]
    return status, container.logs().decode(errors="replace"), time.monotonic() - start


def verdict(logs: str) -> str:
    """The stage's last line (its one-line verdict)."""
    lines = [line for line in logs.splitlines() if line.startswith("ascend-llm: selftest comm")]
    assert lines, logs[-3000:]
    return lines[-1]


def test_two_nodes_all_reduce_and_report_the_world_size(chain: Any, docker_client: Any, network: Any) -> None:
    args = ("--nproc-per-node", "2", "--timeout", str(TIMEOUT), "--size-mb", "8", "--iters", "3")
    first = node(docker_client, chain.image, network, "node0", 0, *args)
    second = node(docker_client, chain.image, network, "node1", 1, *args)
    code0, logs0, _ = finish(first, 120)
    code1, logs1, _ = finish(second, 60)
    assert (code0, code1) == (0, 0), logs0[-3000:] + logs1[-3000:]
    assert verdict(logs0).startswith(
        "ascend-llm: selftest comm passed: world size 4 (2 node(s) x 2 process(es)), gloo, all-reduce correct"
    )
    assert "bus bandwidth" in verdict(logs0)
    # the table on node 0 has every rank, with the host it ran on
    for rank, host in ((0, "node0"), (1, "node0"), (2, "node1"), (3, "node1")):
        row = next(line for line in logs0.splitlines() if line.startswith(f"selftest comm: {rank:>6}  "))
        assert f"{network.name}-{host}" in row and row.rstrip().endswith("ok (10)"), row
    assert "gloo on the CPU tests the host network" in logs0  # no NPU here: the stage chose gloo itself
    assert verdict(logs1).startswith("ascend-llm: selftest comm passed on node 1: ranks 2-3 of world size 4")


def test_a_missing_node_fails_within_the_timeout_with_one_clear_line(
    chain: Any, docker_client: Any, network: Any
) -> None:
    lonely = node(docker_client, chain.image, network, "node0", 0, "--timeout", str(TIMEOUT))
    code, logs, seconds = finish(lonely, 120)
    assert code == 1, logs[-3000:]
    assert seconds < TIMEOUT + 30, f"took {seconds:.0f} s for --timeout {TIMEOUT}"
    line = verdict(logs)
    assert line.startswith(
        f"ascend-llm: selftest comm failed on node 0: only 1 of 2 nodes reached the rendezvous at "
        f"{network.name}-node0:6000 within {TIMEOUT} s (1 missing); likely cause: `selftest comm` is not running"
    ), line


def test_a_wrong_interface_names_the_ranks_and_the_variable(chain: Any, docker_client: Any, network: Any) -> None:
    """GLOO_SOCKET_IFNAME=lo makes every rank advertise 127.0.0.1, as a wrong NIC choice would."""
    args = ("--timeout", str(TIMEOUT), "--size-mb", "1", "--iters", "1")
    env = {"GLOO_SOCKET_IFNAME": "lo"}
    first = node(docker_client, chain.image, network, "node0", 0, *args, env=env)
    second = node(docker_client, chain.image, network, "node1", 1, *args, env=env)
    code0, logs0, _ = finish(first, 120)
    code1, logs1, _ = finish(second, 60)
    assert code0 != 0 and code1 != 0
    for logs in (logs0, logs1):
        line = verdict(logs)
        assert "selftest comm failed" in line and "GLOO_SOCKET_IFNAME" in line and "(now lo)" in line, line

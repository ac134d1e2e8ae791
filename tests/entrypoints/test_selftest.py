"""``ascend-llm selftest comm``: the training rendezvous, the composed torchrun line, the verdict, and
real runs of the workers through torchrun on this machine's CPU (gloo).

Real runs use 127.0.0.2 as the "remote" master address: it is loopback, but not one of the names the
launcher refuses for several nodes, so two stage runners here behave like two hosts.
"""

from __future__ import annotations

import datetime
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ascend_llm.stages.comm_report import likely_cause, spans
from ascend_llm.stages.selftest import CommWatch, verdict
from stagekit import make_devices

needs_torchrun = pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun (torch) is not installed here")
REMOTE = "127.0.0.2"


def tokens(script: str) -> list[str]:
    """The exec'd command of a rendered script as argv."""
    command = script[script.index("\nexec ") + 1 :]
    return shlex.split(command.replace("\\\n", " "))[1:]


def rendezvous(script: str) -> dict[str, str]:
    """torchrun's five rendezvous options."""
    argv = tokens(script)
    keys = ("--nproc_per_node", "--nnodes", "--node_rank", "--master_addr", "--master_port")
    return {key: argv[argv.index(key) + 1] for key in keys}


def exports(script: str) -> dict[str, str]:
    out = {}
    for line in script.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            out[name] = value.split("  #")[0]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the composed command -------------------------------------------------------------------------


def test_dry_run_is_torchrun_with_the_flags_rendezvous_and_the_worker(ascend) -> None:
    result = ascend(
        "selftest", "comm", "--dry-run", "--nnodes", "2", "--node-rank", "1", "--master-addr", "n0", "--timeout", "45"
    )
    assert result.code == 0, result.err
    argv = tokens(result.out)
    assert argv[:13] == [
        "torchrun",
        "--nproc_per_node",
        "1",
        "--nnodes",
        "2",
        "--node_rank",
        "1",
        "--master_addr",
        "n0",
        "--master_port",
        "6000",
        "--rdzv_conf",
        "timeout=45",
    ]
    assert argv[13:] == [
        "--module",
        "ascend_llm.stages.comm_worker",
        "--backend",
        "gloo",
        "--timeout",
        "45",
        "--size-mb",
        "64",
        "--iters",
        "10",
    ]
    env = exports(result.out)
    assert env["TORCH_DEVICE_BACKEND_AUTOLOAD"] == '"${TORCH_DEVICE_BACKEND_AUTOLOAD:-0}"'  # no NPU: skip torch_npu
    assert env["HCCL_CONNECT_TIMEOUT"] == '"${HCCL_CONNECT_TIMEOUT:-120}"'  # CANN's minimum, not 45
    assert "gloo on the CPU tests the host network" in result.err
    assert "ascend-toolkit/set_env.sh" not in result.out  # gloo needs no CANN


def test_npus_here_mean_hccl_one_process_per_npu_and_the_cann_environment(ascend, sysroot) -> None:
    make_devices(sysroot, 8)
    result = ascend("selftest", "comm", "--dry-run", "--timeout", "900")
    assert result.code == 0, result.err
    argv = tokens(result.out)
    assert argv[argv.index("--nproc_per_node") + 1] == "8"
    assert argv[argv.index("--backend") + 1] == "hccl"
    assert "TORCH_DEVICE_BACKEND_AUTOLOAD" not in exports(result.out)
    assert exports(result.out)["HCCL_CONNECT_TIMEOUT"] == '"${HCCL_CONNECT_TIMEOUT:-900}"'
    assert "ascend-toolkit/set_env.sh" in result.out


def test_gloo_can_be_forced_on_an_npu_host(ascend, sysroot) -> None:
    make_devices(sysroot, 8)
    result = ascend("selftest", "comm", "--dry-run", "--backend", "gloo")
    argv = tokens(result.out)
    assert (argv[argv.index("--backend") + 1], argv[argv.index("--nproc_per_node") + 1]) == ("gloo", "1")


LAUNCHERS = {
    "MindCluster": {
        "MINDX_TASK_ID": "j",
        "MASTER_ADDR": "svc",
        "MASTER_PORT": "2222",
        "RANK": "1",
        "WORLD_SIZE": "16",
        "LOCAL_WORLD_SIZE": "8",
    },
    "Volcano": {
        "VC_TASK_INDEX": "0",
        "MASTER_ADDR": "job-master-0.job",
        "MASTER_PORT": "23456",
        "WORLD_SIZE": "2",
        "RANK": "1",
        "NPUS_PER_NODE": "8",
    },
    "Kubeflow PyTorchJob": {
        "PET_NNODES": "2",
        "PET_NPROC_PER_NODE": "8",
        "PET_NODE_RANK": "1",
        "RANK": "1",
        "WORLD_SIZE": "16",
        "MASTER_ADDR": "job-master-0",
        "MASTER_PORT": "23456",
    },
    "environment": {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "6015", "NNODES": "2", "NODE_RANK": "1"},
}


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_the_rendezvous_is_the_one_a_training_stage_derives(
    launcher, ascend, world, roomy_disk, sysroot, monkeypatch
) -> None:
    make_devices(sysroot, 8)
    for name, value in LAUNCHERS[launcher].items():
        monkeypatch.setenv(name, value)
    sft = ascend(
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
        "--nproc-per-node",
        "8",
    )
    test = ascend("selftest", "comm", "--dry-run", "--nproc-per-node", "8")
    assert sft.code == 0 and test.code == 0, sft.err + test.err
    assert rendezvous(test.out) == rendezvous(sft.out)
    assert rendezvous(test.out)["--node_rank"] == "1" and rendezvous(test.out)["--nnodes"] == "2"
    if launcher != "environment":
        assert f"# rendezvous from {launcher}" in test.out


def test_a_preset_gives_the_training_layout(ascend) -> None:
    result = ascend("selftest", "comm", "--dry-run", "--model", "qwen3-32b", "--master-addr", "n0")
    argv = tokens(result.out)
    assert result.code == 0, result.err
    assert (argv[argv.index("--nproc_per_node") + 1], argv[argv.index("--nnodes") + 1]) == ("8", "2")
    lora = ascend("selftest", "comm", "--dry-run", "--model", "qwen3-32b", "--for", "lora")
    assert lora.code == 0, lora.err
    assert tokens(lora.out)[tokens(lora.out).index("--nnodes") + 1] == "1"


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--nnodes", "2", "--node-rank", "2", "--master-addr", "m"], {}, "node rank 2 is not below nnodes 2"),
        (["--model", "qwen3-32b"], {}, "2 nodes need --master-addr"),
        (["--timeout", "0"], {}, "selftest: argument --timeout: must be at least 1, got 0"),
        (["--", "--foo"], {}, "selftest comm takes no `-- --foo`"),
        (["--nnodes", "3"], {"PET_NNODES": "2", "MASTER_ADDR": "m"}, "--nnodes 3 disagrees with Kubeflow PyTorchJob"),
        (["--backend", "nccl"], {}, "argument --backend: invalid choice: 'nccl'"),
    ],
)
def test_bad_combinations_are_one_line_and_exit_2(ascend, monkeypatch, argv, env, needle) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = ascend("selftest", "comm", "--dry-run", *argv)
    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.err


def test_hccl_without_npus_is_refused_before_launching(ascend) -> None:
    result = ascend("selftest", "comm", "--backend", "hccl")
    assert result.code == 2
    assert "no NPU visible (no /dev/davinciN)" in result.err


def test_help_explains_the_stage(ascend) -> None:
    from ascend_llm.stages import STAGES

    text = STAGES["selftest"].parser().format_help()
    for words in ("all-reduce", "HCCL_SOCKET_IFNAME", "--timeout", "qwen3-32b    nproc_per_node=8 nnodes=2"):
        assert words in text
    assert "  selftest     Prove the hosts reach each other" in ascend("--help").out


# -- the verdict ----------------------------------------------------------------------------------


def request(ascend_args=("--nnodes", "2", "--master-addr", "n0", "--timeout", "30")):
    from ascend_llm.cli import build_request
    from ascend_llm.stages import STAGES

    return build_request(STAGES["selftest"], ["comm", *ascend_args])


def watch_of(*lines: str) -> CommWatch:
    watch = CommWatch()
    for line in lines:
        # split across chunks on purpose: the watcher must join them
        data = (line + "\n").encode()
        watch(data[:7])
        watch(data[7:])
    return watch


def test_verdict_on_success_names_world_size_and_bandwidth() -> None:
    summary = (
        'ascend-llm-selftest {"event": "summary", "world_size": 16, "nnodes": 2, "local_world_size": 8, '
        '"busbw": 21.5, "bytes": 67108864}'
    )
    line = verdict(request(), watch_of("noise", summary), 0)
    assert line == (
        "selftest comm passed: world size 16 (2 node(s) x 8 process(es)), gloo, all-reduce correct on every rank; "
        "bus bandwidth 21.50 GB/s for 64 MiB"
    )


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        (
            ["torch.distributed.DistStoreError: Timed out after 31 seconds waiting for clients. 1/2 clients joined."],
            "failed on node 0: only 1 of 2 nodes reached the rendezvous at n0:6000 within 30 s (1 missing)",
        ),
        (
            ["[E] The client socket has timed out after 30000ms while trying to connect to (n0, 6000)."],
            "could not reach the rank-0 node at n0:6000 within 30 s",
        ),
        (["DistNetworkError: ... code: -98, name: EADDRINUSE, message: address already in use"], "port 6000 is"),
        (["(gai error: -2 - Name or service not known)"], "the master address n0 does not resolve here"),
        (
            ['ascend-llm-selftest {"event": "fail", "rank": 0, "missing": [2, 3], "host": "h", "phase": "check-in"}'],
            "rank(s) 2-3 (node(s) 2-3) never reached the rendezvous",
        ),
        (
            [
                'ascend-llm-selftest {"event": "fail", "rank": 1, "host": "h1", "phase": "connect", '
                '"error": "RuntimeError: Connection refused", "cause": "the network interface: set GLOO_SOCKET_IFNAME"}'
            ],
            "rank(s) 1 on h1 (node 0) in connect: RuntimeError: Connection refused; likely cause: the network",
        ),
        (
            ['ascend-llm-selftest {"event": "fail", "rank": 5, "wrong": [5], "host": "h", "phase": "result"}'],
            "rank(s) 5 got a wrong all-reduce result",
        ),
        (["Traceback ... something else"], "failed on node 0 (exit 1) before any rank reported"),
    ],
)
def test_verdict_on_failure_is_one_line_with_the_likely_cause(lines, needle) -> None:
    line = verdict(request(), watch_of(*lines), 1)
    assert "\n" not in line and needle in line, line
    assert line.startswith("selftest comm failed") and "likely cause" in line


def test_likely_causes_name_the_variables_and_ports() -> None:
    hccl = likely_cause("hccl", "connect", "EI0006: Getting socket times out", {"HCCL_IF_BASE_PORT": "30000"})
    assert "HCCL_SOCKET_IFNAME" in hccl and "30000-30031" in hccl and "HCCL_CONNECT_TIMEOUT" in hccl
    assert "GLOO_SOCKET_IFNAME" in likely_cause("gloo", "connect", "Connection refused", {})
    assert "(now eth1)" in likely_cause("gloo", "connect", "refused", {"GLOO_SOCKET_IFNAME": "eth1"})
    assert "ascend-llm check" in likely_cause("hccl", "import", "libhccl.so: cannot open", {})
    assert spans([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


# -- real runs through torchrun (gloo on this machine's CPU) ---------------------------------------


def stage(script_env, tmp_path: Path, *argv: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ascend_llm", "selftest", "comm", "--log-dir", str(tmp_path / "logs"), *argv],
        env={**script_env, **(env or {})},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def last_line(err: str) -> str:
    return [line for line in err.splitlines() if line.startswith("ascend-llm: selftest comm")][-1]


@needs_torchrun
def test_two_nodes_here_pass_and_report_every_rank(script_env, tmp_path: Path) -> None:
    port = str(free_port())
    common = ["--nnodes", "2", "--nproc-per-node", "2", "--master-addr", REMOTE, "--master-port", port]
    common += ["--timeout", "30", "--size-mb", "2", "--iters", "2"]
    node1 = stage(script_env, tmp_path, *common, "--node-rank", "1")
    node0 = stage(script_env, tmp_path, *common, "--node-rank", "0")
    out0, err0 = node0.communicate(timeout=120)
    _, err1 = node1.communicate(timeout=60)
    assert (node0.returncode, node1.returncode) == (0, 0), err0[-2000:] + err1[-2000:]
    assert last_line(err0).startswith("ascend-llm: selftest comm passed: world size 4 (2 node(s) x 2 process(es))")
    assert last_line(err1).startswith("ascend-llm: selftest comm passed on node 1: ranks 2-3 of world size 4")
    table = [line for line in out0.splitlines() if line.startswith("selftest comm: ") and line.endswith("ok (10)")]
    assert len(table) == 4, out0
    assert "busbw" in out0
    assert list((tmp_path / "logs").glob("selftest-comm-node0-*.log"))


@needs_torchrun
def test_the_missing_node_is_reported_within_the_timeout(script_env, tmp_path: Path) -> None:
    port = str(free_port())
    start = time.monotonic()
    alone = stage(
        script_env, tmp_path, "--nnodes", "2", "--master-addr", REMOTE, "--master-port", port, "--timeout", "5"
    )
    _, err = alone.communicate(timeout=90)
    assert alone.returncode == 1
    assert time.monotonic() - start < 40
    assert "only 1 of 2 nodes reached the rendezvous" in last_line(err)


@needs_torchrun
def test_an_unknown_interface_is_named(script_env, tmp_path: Path) -> None:
    argv = ["--nproc-per-node", "2", "--master-port", str(free_port()), "--timeout", "20", "--size-mb", "1"]
    run = stage(script_env, tmp_path, *argv, env={"GLOO_SOCKET_IFNAME": "nosuch0"})
    _, err = run.communicate(timeout=90)
    assert run.returncode == 1
    line = last_line(err)
    assert "in connect:" in line and "nosuch0" in line and "GLOO_SOCKET_IFNAME" in line, line


@needs_torchrun
def test_a_rank_that_never_starts_is_named_at_check_in(script_env, tmp_path: Path) -> None:
    """The worker alone, as rank 0 of 2 with the store up but rank 1 never coming."""
    import torch.distributed as dist

    port = free_port()
    store = dist.TCPStore("127.0.0.1", port, None, True, datetime.timedelta(seconds=30), wait_for_workers=False)
    env = {
        **script_env,
        "RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "GROUP_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "TORCH_DEVICE_BACKEND_AUTOLOAD": "0",
    }
    argv = [sys.executable, "-m", "ascend_llm.stages.comm_worker", "--backend", "gloo", "--timeout", "3"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    del store
    assert done.returncode == 1
    assert "FAILED in check-in: rank(s) 1 did not start within 3 s" in done.stdout
    assert '"missing": [1]' in done.stdout

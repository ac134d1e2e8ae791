"""The stage runner: exit status kept through the tee, signals forwarded, checkpoint-load detection.

Signal tests run the runner as a real process (``python -m ascend_llm.runner``) around real child
processes, and synchronise on lines the children print once their handlers are installed.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ascend_llm.checkpoint import is_hf_model_dir
from ascend_llm.errors import EXIT_CHECKPOINT_NOT_LOADED
from ascend_llm.runner import children_of, run_script
from stagekit import make_devices, make_mindspeed_home

TIMEOUT = 60


def run(text: str, log: Path):
    out, err = io.BytesIO(), io.BytesIO()
    code = run_script(text, log, out=out, err=err)
    return code, out.getvalue().decode(), err.getvalue().decode()


def test_exit_status_survives_the_tee(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    code, out, _ = run("echo working; echo oops >&2; exit 7", log)
    assert code == 7
    assert out == "working\noops\n"
    assert log.read_text() == "working\noops\n"


def test_success_is_zero(tmp_path: Path) -> None:
    assert run("echo fine", tmp_path / "l")[0] == 0


@pytest.mark.parametrize(
    "message",
    [
        "could not load the checkpoint\n[Errno 2] No such file: mp_rank_03/model_optim_rng.pt",
        ">> '--exit-on-missing-checkpoint' set ... exiting. <<",
    ],
)
def test_upstreams_exit_zero_after_a_failed_load_is_a_failure(tmp_path: Path, message: str) -> None:
    code, _, err = run(f"printf '%s\\n' {message!r}; exit 0", tmp_path / "l")
    assert code == EXIT_CHECKPOINT_NOT_LOADED
    assert "treating that as a failure" in err


def test_marker_split_across_reads_is_found(tmp_path: Path) -> None:
    script = (
        "python3 -c \"import sys,os; os.write(1, b'x' * 65530 + b'could not lo'); "
        "sys.stdout.flush(); os.write(1, b'ad the checkpoint\\n')\""
    )
    assert run(script, tmp_path / "l")[0] == EXIT_CHECKPOINT_NOT_LOADED


def test_a_signal_death_is_128_plus_the_signal(tmp_path: Path) -> None:
    assert run("kill -KILL $$", tmp_path / "l")[0] == 128 + signal.SIGKILL


# -- signals through a real runner process ----------------------------------------------------------
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    mark, code = sys.argv[1], int(sys.argv[2])
    def stop(signum, frame):
        with open(mark, "a") as f:
            f.write(f"{signal.Signals(signum).name} pid={os.getpid()} pgid={os.getpgrp()}\\n")
        sys.exit(code)
    if code >= 0:
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    print("READY", flush=True)
    while True:
        time.sleep(60)
""")

TORCHRUN = textwrap.dedent("""
    import os, signal, subprocess, sys
    mark = sys.argv[1]
    def stop(signum, frame):          # like torchrun: on a signal it kills its workers soon after
        with open(mark + ".agent", "a") as f:
            f.write(signal.Signals(signum).name + "\\n")
        worker.kill()
        sys.exit(99)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker = subprocess.Popen([sys.executable, sys.argv[2], mark + ".worker", sys.argv[3]],
                              start_new_session=True)
    sys.exit(worker.wait())
""")

WORKER = textwrap.dedent("""
    import os, signal, sys, time
    mark, mode = sys.argv[1], sys.argv[2]
    def stop(signum, frame):          # like Megatron's --exit-signal-handler: save, then exit 0
        with open(mark, "a") as f:
            f.write(signal.Signals(signum).name + "\\n")
        if mode == "exit":
            sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    print("WORKER-READY", flush=True)
    while True:
        time.sleep(60)
""")


def start_runner(tmp_path: Path, env: dict[str, str], command: list[str], graceful: bool = False):
    argv = [sys.executable, "-m", "ascend_llm.runner", "--log", str(tmp_path / "r.log")]
    if graceful:
        argv.append("--graceful-term")
    proc = subprocess.Popen([*argv, "--", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    return proc


def wait_for(proc: subprocess.Popen, word: str) -> None:
    """Read the runner's stdout until ``word`` (the child printed it after installing handlers)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == word:
            return
    raise AssertionError(f"runner ended before {word}: {proc.wait()} {proc.stderr.read()}")


@pytest.mark.parametrize(
    ("sig", "child_code", "expected"),
    [
        (signal.SIGTERM, 7, 7),  # the child handles SIGTERM and exits 7: the runner returns 7
        (signal.SIGINT, 5, 5),  # Ctrl-C reaches the child too
        (signal.SIGTERM, -1, 143),  # no handler: the child dies of SIGTERM -> 128 + 15
    ],
)
def test_signals_reach_the_child_and_its_status_is_returned(
    tmp_path: Path, script_env, sig, child_code, expected
) -> None:
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    mark = tmp_path / "mark"
    proc = start_runner(tmp_path, script_env, [sys.executable, str(child), str(mark), str(child_code)])
    try:
        wait_for(proc, "READY")
        proc.send_signal(sig)
        assert proc.wait(timeout=TIMEOUT) == expected
    finally:
        proc.kill()
    if child_code >= 0:
        line = mark.read_text()
        assert line.startswith(sig.name)
        pid, pgid = (int(part.split("=")[1]) for part in line.split()[1:3])
        assert pid == pgid != proc.pid, "the child runs in its own process group, apart from the runner"
    assert "READY" in (tmp_path / "r.log").read_text()


def test_training_stop_goes_to_the_workers_not_torchrun(tmp_path: Path, script_env) -> None:
    """The first SIGTERM reaches the workers (Megatron saves and exits 0); torchrun, which would kill
    them 30 s later, is left alone. The runner reports the stop as 128 + SIGTERM."""
    (tmp_path / "torchrun.py").write_text(TORCHRUN)
    (tmp_path / "worker.py").write_text(WORKER)
    mark = tmp_path / "mark"
    proc = start_runner(
        tmp_path,
        script_env,
        [sys.executable, str(tmp_path / "torchrun.py"), str(mark), str(tmp_path / "worker.py"), "exit"],
        graceful=True,
    )
    try:
        wait_for(proc, "WORKER-READY")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    assert (tmp_path / "mark.worker").read_text() == "SIGTERM\n"
    assert not (tmp_path / "mark.agent").exists(), "torchrun must not be signalled by a graceful stop"
    assert "asked 1 worker(s) to save a checkpoint" in proc.stderr.read()


def test_a_second_sigterm_stops_at_once(tmp_path: Path, script_env) -> None:
    (tmp_path / "torchrun.py").write_text(TORCHRUN)
    (tmp_path / "worker.py").write_text(WORKER)
    mark = tmp_path / "mark"
    proc = start_runner(
        tmp_path,
        script_env,
        [sys.executable, str(tmp_path / "torchrun.py"), str(mark), str(tmp_path / "worker.py"), "stay"],
        graceful=True,
    )
    try:
        wait_for(proc, "WORKER-READY")
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # wait until the runner says the first one was delivered
            seen.append(line)
            if "asked 1 worker(s)" in line:
                break
        assert seen and "asked 1 worker(s)" in seen[-1], seen
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=TIMEOUT)
        assert code == 99, (code, seen, proc.stderr.read())
    finally:
        proc.kill()
    assert (tmp_path / "mark.agent").read_text() == "SIGTERM\n"


def test_children_of_finds_direct_children(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in children_of(os.getpid())
        assert children_of(child.pid) == []
    finally:
        child.kill()
        child.wait()


# -- a real (non-dry-run) stage through a stand-in torchrun ------------------------------------------
FAKE_TORCHRUN = textwrap.dedent("""\
    #!/usr/bin/env bash
    echo "torchrun $*"
    echo "cwd $(pwd)"
    echo "CUDA_DEVICE_MAX_CONNECTIONS=$CUDA_DEVICE_MAX_CONNECTIONS HCCL_CONNECT_TIMEOUT=$HCCL_CONNECT_TIMEOUT"
    case "$FAKE_MODE" in
      notloaded) echo "could not load the checkpoint"; exit 0 ;;
      crash) echo "Traceback: boom"; exit 5 ;;
      *) exit 0 ;;
    esac
""")


@pytest.fixture
def real_run(tmp_path: Path, sysroot: Path, world, roomy_disk, monkeypatch):
    """An 8-NPU machine with MindSpeed-LLM present and a stand-in torchrun on PATH."""
    make_devices(sysroot, 8)
    home = make_mindspeed_home()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "torchrun").write_text(FAKE_TORCHRUN)
    (bin_dir / "torchrun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HCCL_CONNECT_TIMEOUT", "600")
    argv = [
        "sft",
        "--model",
        "qwen3-14b",
        "--load",
        world.checkpoint(8, 1),
        "--save",
        world.out / "sft",
        "--data",
        world.sft_data,
        "--tokenizer",
        world.hf,
    ]
    return argv, home, world


def test_real_run_logs_and_returns_the_status(ascend, real_run, monkeypatch) -> None:
    argv, home, world = real_run
    result = ascend(*argv)
    code, out = result.code, result.out
    assert code == 0, result.err
    assert f"cwd {home}" in out
    assert "CUDA_DEVICE_MAX_CONNECTIONS=1 HCCL_CONNECT_TIMEOUT=600" in out, "caller's env overrides defaults"
    logs = list((world.out / "sft" / "logs").glob("sft-*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert text.startswith("# #!/usr/bin/env bash\n"), "the log starts with the script that ran"
    assert "torchrun --nproc_per_node 8" in text and "posttrain_gpt.py" in text
    monkeypatch.setenv("FAKE_MODE", "crash")
    result = ascend(*argv)
    assert result.code == 5
    assert "sft failed with exit status 5; log:" in result.err


def test_real_run_catches_the_silent_checkpoint_failure(ascend, real_run, monkeypatch) -> None:
    argv, _, _ = real_run
    monkeypatch.setenv("FAKE_MODE", "notloaded")
    result = ascend(*argv)
    assert result.code == EXIT_CHECKPOINT_NOT_LOADED
    assert "could not load the checkpoint" in result.err


def test_plain_commands_run_as_themselves(script_env) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ascend_llm", "bash", "-c", "echo ok; exit 4"],
        capture_output=True,
        text=True,
        env=script_env,
        timeout=TIMEOUT,
    )
    assert (done.returncode, done.stdout) == (4, "ok\n")
    done = subprocess.run(
        [sys.executable, "-m", "ascend_llm", "no-such-program-xyz"],
        capture_output=True,
        text=True,
        env=script_env,
        timeout=TIMEOUT,
    )
    assert done.returncode == 127 and "neither a stage" in done.stderr and "Traceback" not in done.stderr


# Stand-in for MindSpeed-LLM 2.3.0's convert_ckpt_v2.py mg -> hf: like the real one it writes the
# safetensors and their index into --save-dir and nothing else (no config.json, no tokenizer;
# checkpoint_convert_v2.md says so). It converts nothing: the shard is empty.
FAKE_V2 = textwrap.dedent("""\
    import json, os, sys
    save = sys.argv[sys.argv.index("--save-dir") + 1]
    os.makedirs(save, exist_ok=True)
    open(os.path.join(save, "model-00001-of-00001.safetensors"), "wb").close()
    with open(os.path.join(save, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": {}}, f)
""")


def test_2_3_0_mcore2hf_leaves_loadable_hf_weights(ascend, world, roomy_disk) -> None:
    """2.3.0's converter writes weights only; ascend-llm adds the config so transformers can load the result."""
    home = make_mindspeed_home()
    (home / "convert_ckpt_v2.py").write_text(FAKE_V2)
    hf = world.hf
    (hf / "generation_config.json").write_text('{"do_sample": true}')
    argv = ["convert", "mcore2hf", "--model", "qwen3-14b", "--load", world.checkpoint(8, 1), "--hf-dir", hf]
    result = ascend(*argv, "--release", "2.3.0")
    assert result.code == 0, result.err
    out = hf / "mg2hf"
    assert (out / "config.json").read_text() == (hf / "config.json").read_text()
    assert (out / "generation_config.json").is_file() and (out / "model-00001-of-00001.safetensors").is_file()
    assert is_hf_model_dir(out)
    assert list(hf.glob("*.safetensors")) == [hf / "model-00001-of-00001.safetensors"], "the original is untouched"


# -- stopping a real stage: one line, 128 + the signal, no traceback ---------------------------------
SLOW_TORCHRUN = textwrap.dedent("""\
    #!/usr/bin/env python3
    # stands in for torchrun of a long training run: says it is running, then waits to be stopped
    import signal, sys, time
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))  # torchrun ends its workers and exits on Ctrl-C
    print("TRAINING", flush=True)
    time.sleep(600)
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_stage_says_so_in_one_line(tmp_path: Path, sysroot: Path, world, script_env, sig) -> None:
    """Ctrl-C / docker stop of a running sft: the runner waits for the stand-in torchrun to end and says how
    the stage ended in one line (a small model, so the disk-space rule passes on any machine)."""
    make_devices(sysroot, 8)
    make_mindspeed_home()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "torchrun").write_text(SLOW_TORCHRUN.replace("python3", sys.executable, 1))
    (bin_dir / "torchrun").chmod(0o755)
    env = {**script_env, **{k: os.environ[k] for k in ("ASCEND_LLM_SYSROOT", "MINDSPEED_LLM_HOME")}}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    hf = world.hf  # its tokenizer files; the model is qwen3-0.6b, trained from its TP1 PP1 checkpoint
    load = world.checkpoint(1, 1)
    argv = ["sft", "--model", "qwen3-0.6b", "--load", load, "--save", tmp_path / "save", "--data", world.sft_data,
            "--tokenizer", hf, "--train-iters", "1", "--gbs", "8"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "ascend_llm", *map(str, argv)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    try:
        wait_for(proc, "TRAINING")
        proc.send_signal(sig)
        code = proc.wait(timeout=TIMEOUT)
        out, err = proc.communicate()
    finally:
        proc.kill()
    assert code == 128 + sig, (code, err)
    assert "Traceback" not in out + err
    stops = [line for line in err.splitlines() if "stopped by" in line]
    assert stops == [stops[0]] and stops[0].startswith(f"ascend-llm: sft stopped by {sig.name} (exit status "), err
    assert "what it completed is kept; log: " in stops[0]
    assert err.count("\n") == 2, err  # "logging to ..." when it started, and the stop

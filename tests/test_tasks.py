"""The Invoke tasks as a user runs them: output, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True)


def test_matrix_lists_shipped_rows_only() -> None:
    out = invoke("matrix")
    assert out.returncode == 0, out.stderr
    for cann in ("8.1.RC1", "8.2.RC1", "8.3.RC1", "8.0.0"):
        assert cann in out.stdout
    assert "(test)" not in out.stdout and "(test)" in invoke("matrix", "--all").stdout


def test_matrix_check_passes_on_the_shipped_file() -> None:
    out = invoke("matrix", "--check")
    assert out.returncode == 0 and "matrix.yaml: OK" in out.stdout


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    text = (REPO / "matrix.yaml").read_text()
    bad = tmp_path / "matrix.yaml"
    bad.write_text(
        text.replace("hdk_min: 25.2.0", "hdk_min: 25.2").replace(
            "megatron: {ref: core_v0.12.1}", "megatron: {ref: core_r0.8.0}"
        )
    )
    return bad


def test_check_lists_every_problem(broken: Path) -> None:
    out = invoke("matrix", "--check", "--matrix", str(broken))
    assert out.returncode == 1
    assert "row 8.2.RC1, field hdk_min:" in out.stdout
    assert "row test, field hdk_min:" in out.stdout  # the test row has the same bad value
    assert "2 problem(s) in matrix.yaml" in out.stdout  # cross-checks wait until the schema holds
    assert "Traceback" not in out.stdout + out.stderr


@pytest.mark.parametrize("task", [["matrix"], ["render", "--cann", "8.1.RC1"]])
def test_an_invalid_matrix_fails_every_task_with_one_line(broken: Path, task: list[str]) -> None:
    out = invoke(*task, "--matrix", str(broken))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: matrix.yaml: row ")
    assert "(and 1 more: run 'invoke matrix --check')" in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--cann", "9.9.9"],
            "error: unknown CANN version (--cann) '9.9.9': choose one of "
            "9.0.0, 8.5.0, 8.1.RC1, 8.2.RC1, 8.3.RC1, 8.0.0",
        ),
        (
            ["--cann", "8.1.RC1", "--torch", "3"],
            "error: unknown torch for CANN 8.1.RC1 (--torch) '3': choose one of 2.1.0, 2.6.0",
        ),
        (
            ["--cann", "8"],
            "error: ambiguous CANN version (--cann) '8': choose one of 8.5.0, 8.1.RC1, 8.2.RC1, 8.3.RC1, 8.0.0",
        ),
    ],
)
def test_bad_choices_exit_2_with_one_line_and_write_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    out = invoke("render", *args, "--out", str(tmp_path / "out"))
    assert (out.returncode, out.stderr) == (2, message + "\n")
    assert not (tmp_path / "out").exists()


def test_render_writes_plan_and_dockerfiles(tmp_path: Path) -> None:
    out = invoke("render", "--cann", "8.1.rc1", "--arch", "aarch64", "--out", str(tmp_path / "r"))
    assert out.returncode == 0, out.stderr
    assert "ascend-llm-stack:8.1.rc1-910b-torch2.1.0-mslm2.1.0-ubuntu22.04-py3.10-aarch64" in out.stdout
    plan = json.loads((tmp_path / "r/plan.json").read_text())
    assert [layer["name"] for layer in plan["layers"]] == ["base", "cann", "pta", "mindspeed", "runtime"]
    for layer in plan["layers"]:
        for rel in layer["files"]:
            assert (tmp_path / "r" / rel).is_file()


def test_render_never_deletes_what_the_user_made_and_replaces_its_own(tmp_path: Path) -> None:
    """The issue's reproduction: `invoke render --out DIR` used to delete whatever DIR held."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work")
    out = invoke("render", "--cann", "8.1.rc1", "--out", str(mine))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "--out" in out.stderr and "choose a new or empty directory" in out.stderr
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"] and (mine / "thesis.tex").read_text() == "months of work"
    fresh = tmp_path / "fresh"
    for _ in range(2):  # a fresh folder, then the same folder again: a previous render is replaced whole
        done = invoke("render", "--cann", "8.1.rc1", "--out", str(fresh))
        assert done.returncode == 0, done.stderr
    assert (fresh / "plan.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "mine"]


class StallingServer(threading.Thread):
    """A download site that sends the start of a file and then holds the connection: a download in progress.
    ``sending`` is set once the first bytes are out (the readiness signal); ``release`` ends the stall."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sending = threading.Event()
        self.release = threading.Event()

    def run(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            while b"\r\n\r\n" not in conn.recv(65536):
                pass
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 4096)
            self.sending.set()
            self.release.wait(120)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stopping_a_download_is_one_line_and_keeps_nothing_half_written(tmp_path: Path, sig: int) -> None:
    server = StallingServer()
    server.start()
    matrix = tmp_path / "matrix.yaml"
    text = (REPO / "matrix.yaml").read_text()
    matrix.write_text(re.sub(r'(?m)^(  url: )"https://ascend-repo[^"]*"', rf'\1"http://127.0.0.1:{server.port}/{{file}}"',
                             text))  # fmt: skip
    assert str(server.port) in matrix.read_text()
    packages = tmp_path / "packages"
    env = {**os.environ, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}
    argv = ["fetch", "--cann", "8.1.RC1", "--arch", "x86_64", "--matrix", str(matrix), "--packages", str(packages),
            "--lock-dir", str(tmp_path / "locks"), "--sources", str(tmp_path)]  # fmt: skip
    # Started as a background job of a script is: SIGINT ignored, inherited through exec (the handler must not rely
    # on Python's default KeyboardInterrupt, which Python installs only for an inherited default disposition).
    ignored = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execv(sys.executable, sys.argv[1:])"
    )
    proc = subprocess.Popen([sys.executable, "-c", ignored, sys.executable, "-m", "invoke", *argv], cwd=REPO, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert server.sending.wait(60), "the download never started"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        server.release.set()
        proc.kill()
    assert proc.returncode == 128 + sig, (proc.returncode, out, err)
    assert err == f"stopped by {signal.Signals(sig).name}\n", err
    assert "Traceback" not in out
    assert not (packages / "Ascend-cann-toolkit_8.1.RC1_linux-x86_64.run").exists(), "no half file under the name"


def test_printed_commands_pass_bytes_that_are_not_utf8_through() -> None:
    """A path holding a Latin-1 byte (a file made on an old system) reaches `invoke run --print` output as
    that byte, even with a strict UTF-8 stdout, instead of a UnicodeEncodeError traceback."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    argv = [b"run", b"--image", b"x", b"--print", b"--", b"check", b"/data/caf\xe9"]
    out = subprocess.run([sys.executable.encode(), b"-m", b"invoke", *argv], cwd=REPO, env=env, capture_output=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith(b" x check '/data/caf\xe9'\n"), out.stdout[-60:]

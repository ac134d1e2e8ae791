"""Run a LaunchScript as a child process: output to stdout and a log file, signals forwarded,
the child's exit status kept.

Why not ``cmd | tee log``: a pipe reports tee's status, so a crashed job looks successful. Here the
runner copies the output itself and returns the child's status. It also turns MindSpeed-LLM's
"could not load the checkpoint ... sys.exit()" (exit 0) into a failure.

Signals: the child runs in its own process group; SIGTERM/SIGINT/SIGHUP sent to the runner (``docker
stop``, Ctrl-C) are forwarded to that group. For training stages the first SIGTERM goes to the
worker processes only: Megatron's ``--exit-signal-handler`` then saves a checkpoint and stops,
and torchrun is not told, because torchrun kills its workers 30 s after it is signalled.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

from ascend_llm.errors import EXIT_CHECKPOINT_NOT_LOADED

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
CHECKPOINT_MARKERS: tuple[tuple[bytes, str], ...] = (
    (
        b"could not load the checkpoint",
        "MindSpeed-LLM could not load the checkpoint (a missing mp_rank shard, or --tp/--pp that do not "
        "match it) and exited 0; treating that as a failure",
    ),
    (
        b"'--exit-on-missing-checkpoint' set",
        "MindSpeed-LLM found no checkpoint to load (no latest_checkpointed_iteration.txt under --load) "
        "and exited 0; treating that as a failure",
    ),
)
TAIL = 256


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc); the torchrun workers when ``pid`` is torchrun."""
    out: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry))
    return sorted(out)


class SignalForwarder:
    """Signal handler that passes stop signals on to the child and remembers them."""

    def __init__(self, proc: subprocess.Popen, graceful_term: bool, say) -> None:
        self.proc = proc
        self.graceful_term = graceful_term
        self.say = say
        self.received: list[int] = []

    def __call__(self, signum: int, frame: object) -> None:
        first = not self.received
        self.received.append(signum)
        if self.graceful_term and first and signum == signal.SIGTERM:
            workers = children_of(self.proc.pid)
            if workers:
                for pid in workers:  # signal first, then talk: a second signal must not overtake this one
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                self.say(
                    f"SIGTERM: asked {len(workers)} worker(s) to save a checkpoint and stop "
                    f"(send it again to stop at once)"
                )
                return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signum)


def _write(stream: BinaryIO | None, data: bytes) -> BinaryIO | None:
    """Write to a stream; drop it (return None) once it is gone, e.g. a closed pipe."""
    if stream is None:
        return None
    try:
        stream.write(data)
        stream.flush()
        return stream
    except (BrokenPipeError, OSError, ValueError):
        return None


def run_script(
    text: str,
    log_path: Path | None,
    graceful_term: bool = False,
    out: BinaryIO | None = None,
    err: BinaryIO | None = None,
    watch: Callable[[bytes], None] | None = None,
    stops: list[int] | None = None,
) -> int:
    """Run bash ``text``; tee its output; return its exit status (see module doc).

    ``watch``, if given, sees every chunk of the output as it arrives (a stage reading its own markers);
    ``stops``, if given, receives the stop signals that arrived (the caller then says how the stage ended)."""
    out = out if out is not None else sys.stdout.buffer
    err = err if err is not None else sys.stderr.buffer
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115 - closed in finally

    def say(message: str) -> None:
        line = f"ascend-llm: {message}\n".encode()
        _write(err, line)
        if log:
            _write(log, line)

    try:
        proc = subprocess.Popen(
            ["bash", "-c", text],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        if log:
            log.close()
        say(f"cannot start bash: {exc}")
        return 127
    forwarder = SignalForwarder(proc, graceful_term, say)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in FORWARDED:
            previous[sig] = signal.signal(sig, forwarder)
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        tail = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out = _write(out, chunk)
            if log:
                _write(log, chunk)
            if watch is not None:
                watch(chunk)
            window = tail + chunk
            for marker, message in CHECKPOINT_MARKERS:
                if marker in window and message not in seen:
                    seen.append(message)
            tail = window[-TAIL:]
        status = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        proc.stdout.close() if proc.stdout else None
    code = 128 - status if status < 0 else status
    if code == 0 and seen:
        for message in seen:
            say(message)
        code = EXIT_CHECKPOINT_NOT_LOADED
    elif code == 0 and forwarder.received:
        code = 128 + forwarder.received[0]  # the workers exited cleanly, but the stage did not finish
    if stops is not None:
        stops.extend(forwarder.received)
    elif forwarder.received:
        say(f"stopped by {signal.Signals(forwarder.received[0]).name} (exit status {code})")
    if log:
        log.close()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ascend_llm.runner [--log FILE] [--graceful-term] -- CMD ARGS...``: run any
    command the way a stage runs (for tests and debugging)."""
    parser = argparse.ArgumentParser(prog="python -m ascend_llm.runner", description=main.__doc__)
    parser.add_argument("--log", type=Path, help="append the output here too")
    parser.add_argument(
        "--graceful-term", action="store_true", help="deliver the first SIGTERM to the command's children only"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    return run_script("exec " + shlex.join(command), args.log, args.graceful_term)


if __name__ == "__main__":
    raise SystemExit(main())

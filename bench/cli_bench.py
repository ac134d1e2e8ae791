#!/usr/bin/env python3
"""Command-line latency: how long the commands a user types take, whole process, start to exit.

    python bench/cli_bench.py [--runs N]

Runs each command N times (default 5) from the repository root after one untimed warm-up run (so the
page cache, not the disk, serves the files), and prints one Markdown table of the median, fastest
and slowest wall-clock times to stdout, with the machine's load average before and after and its
core count: the figures move with the load, so read them with it. The commands run as found on
PATH (a pyenv shim included, as the user's shell would run them) with this process's environment,
except that Python may cache bytecode as it does by default: a PYTHONDONTWRITEBYTECODE that the
environment sets would make every run compile the project's modules again (``--as-is`` keeps it).

Two floor rows say what no change to this project can remove: the interpreter starting
(``python -c pass``) and Invoke itself loading a one-task ``tasks.py`` (``invoke --list`` in an
empty folder). The dry-run build asks a Docker engine which layers exist when one answers (and
assumes none without one); nothing is built and nothing needs Docker.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EMPTY_TASKS = 'from invoke import task\n\n\n@task\ndef noop(c):\n    """Nothing."""\n'


@dataclass(frozen=True)
class Case:
    label: str
    argv: list[str]
    target: float | None = None  # seconds, median (issue 15)


@dataclass(frozen=True)
class Timing:
    case: Case
    seconds: list[float]
    codes: list[int]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def cases(empty: Path) -> list[Case]:
    return [
        Case("`invoke --list`", ["invoke", "--list"], 0.3),
        Case("`invoke --help build`", ["invoke", "--help", "build"], 0.3),
        Case("`invoke matrix`", ["invoke", "matrix"], 0.5),
        Case("`invoke build --cann 8.1.RC1 --dry-run`", ["invoke", "build", "--cann", "8.1.RC1", "--dry-run"]),
        Case("`ascend-llm --help`", ["ascend-llm", "--help"]),
        Case("floor: `python -c pass`", ["python", "-c", "pass"]),
        Case("floor: `invoke --list`, one-task tasks.py", ["invoke", "-r", str(empty), "--list"]),
    ]


def measure(case: Case, runs: int, env: dict[str, str]) -> Timing:
    exe = shutil.which(case.argv[0])
    if exe is None:
        sys.exit(f"error: {case.argv[0]} is not on PATH: pip install -e . (and -e entrypoints) first")
    argv = [exe, *case.argv[1:]]
    seconds, codes = [], []
    for i in range(runs + 1):
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, check=False)  # fmt: skip
        took = time.perf_counter() - started
        if i:  # the first run only warms the page cache
            seconds.append(took)
            codes.append(done.returncode)
    return Timing(case, seconds, codes)


def verdict(t: Timing) -> str:
    if any(t.codes):
        return f"**exit {max(t.codes, key=abs)}**"
    if t.case.target is None:
        return "—"
    return f"≤ {t.case.target:.1f} s: " + ("**met**" if t.median <= t.case.target else "**not met**")


def table(timings: list[Timing], load_before: tuple[float, ...], load_after: tuple[float, ...], runs: int,
          bytecode: str) -> str:  # fmt: skip
    invoke = shutil.which("invoke") or "invoke"
    shim = " (a pyenv shim: its bash start-up is part of every `invoke` and `python` figure)" if (
        "pyenv" in invoke and "shims" in invoke) else ""  # fmt: skip
    lines = [
        f"**Command-line latency** ({dt.date.today().isoformat()}): median of {runs} runs after one warm-up, whole "
        f"process, from the repository root; {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"`invoke` = {invoke}{shim}; {bytecode}. Load average (1, 5, 15 min) {_load(load_before)} before, "
        f"{_load(load_after)} after.",
        "",
        "| command | median | fastest | slowest | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in timings:
        lines.append(f"| {t.case.label} | {t.median:.2f} s | {min(t.seconds):.2f} s | {max(t.seconds):.2f} s "
                     f"| {verdict(t)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _load(avg: tuple[float, ...]) -> str:
    return ", ".join(f"{x:.2f}" for x in avg)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument("--as-is", action="store_true", help="keep PYTHONDONTWRITEBYTECODE if the environment sets it")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    env = dict(os.environ)
    if env.get("PYTHONDONTWRITEBYTECODE") and not args.as_is:
        del env["PYTHONDONTWRITEBYTECODE"]
        bytecode = "bytecode cached (this environment's PYTHONDONTWRITEBYTECODE unset for the runs)"
    elif env.get("PYTHONDONTWRITEBYTECODE"):
        bytecode = "PYTHONDONTWRITEBYTECODE set: every run compiles the project's modules"
    else:
        bytecode = "bytecode cached"
    with tempfile.TemporaryDirectory(prefix="cli-bench-") as tmp:
        (Path(tmp) / "tasks.py").write_text(EMPTY_TASKS)
        before = os.getloadavg()
        timings = []
        for case in cases(Path(tmp)):
            print(f"timing {case.label} ...", file=sys.stderr)
            timings.append(measure(case, args.runs, env))
        after = os.getloadavg()
    sys.stdout.write(table(timings, before, after, args.runs, bytecode))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run a checked plan: one child process per step, records after each finished step, signals passed on.

Each step runs as ``ascend-llm <stage> ...`` in a child (in the image: this interpreter's
``-m ascend_llm``; on the host, ``invoke pipeline`` hands a launcher that wraps it in the
``docker run`` line of ``invoke run``). The child does its own preflight again, now against the files
the earlier steps wrote, composes its LaunchScript and runs it as a stage always does. The child's
output is copied to stdout and to ``<output>/pipeline/logs/<step>-<time>.log`` by the same runner
the stages use (``runner.run_script``), which also forwards SIGTERM/SIGINT/SIGHUP to the child: a
training step then saves a checkpoint and stops (see runner.py), the step gets no record, and the
pipeline stops with 128+signal after writing its report. A signal between two steps stops the
pipeline before the next one starts.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ascend_llm.pipeline import state as states
from ascend_llm.pipeline.plan import Plan, Step, tracker_state
from ascend_llm.runner import FORWARDED, run_script
from ascend_llm.stages.evaluate import EvaluateStage
from ascend_llm.stages.training import TrainingStage

Launcher = Callable[[Sequence[str]], list]
BENCHMARK_SCORE = re.compile(
    r"(?P<task>[A-Za-z][\w-]*) acc(?:uracy)? = (?P<correct>\d+)/(?P<total>\d+)=(?P<score>[0-9.]+(?:[eE][-+]?\d+)?)"
)


def in_image(stage_argv: Sequence[str]) -> list:
    """Run a step with this interpreter's ascend_llm (the image venv's inside an image)."""
    return [sys.executable or "python3", "-m", "ascend_llm", *stage_argv]


@dataclass
class StepResult:
    """What happened to one step in this run (or, for a skipped step, in the run that finished it)."""

    name: str
    status: str  # ran | skipped | failed | stopped | not run | not selected
    reason: str = ""
    exit_code: int | None = None
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    log: str | None = None
    command: list = field(default_factory=list)
    record: dict[str, Any] | None = None


def say(message: str) -> None:
    sys.stderr.write(f"ascend-llm: pipeline: {message}\n")
    sys.stderr.flush()


class StopFlag:
    """Between steps, a stop signal is remembered and ends the pipeline before the next step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: object) -> None:
        self.signum = self.signum or signum
        say(f"{signal.Signals(signum).name}: stopping before the next step")

    def install(self) -> None:
        for sig in FORWARDED:
            with contextlib.suppress(ValueError):  # not the main thread
                self.previous[sig] = signal.signal(sig, self)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def metrics_of(step: Step, log: str) -> dict[str, Any]:
    """The evaluation numbers a step produced: the accuracy report, or the benchmark's score line."""
    req = step.req
    if req is None or not isinstance(step.stage, EvaluateStage):
        return {}
    if EvaluateStage.is_accuracy(req):
        try:
            with open(req.opts["output"], encoding="utf-8") as handle:
                report = json.load(handle)
        except (OSError, ValueError):
            return {}
        keep = ("accuracy", "correct", "total", "per_label", "device", "data", "model")
        return {"accuracy": {k: report.get(k) for k in keep}, "report": req.opts["output"]}
    found = None
    try:
        with open(log, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                match = BENCHMARK_SCORE.search(line)
                if match:
                    found = match
    except OSError:
        return {}
    if not found:
        return {"benchmark": {"task": req.opts.get("task"), "score": None, "note": "no score line in the log"}}
    return {
        "benchmark": {
            "task": req.opts.get("task"),
            "score": float(found.group("score")),
            "correct": int(found.group("correct")),
            "total": int(found.group("total")),
            "line": found.group(0),
        }
    }


def outputs_record(step: Step, exclude: tuple[str, ...]) -> dict[str, Any]:
    return {out.path: {"kind": out.kind, "fingerprint": states.fingerprint(out.path, exclude)} for out in step.outputs}


class Executor:
    """Runs the steps a plan selected, in order (see the module docstring)."""

    def __init__(self, plan: Plan, planner: Any, launcher: Launcher = in_image) -> None:
        self.plan = plan
        self.planner = planner
        self.launcher = launcher
        self.results: list[StepResult] = []

    def run(self) -> tuple[int, str]:
        """(exit code, status) of the whole run."""
        stop = StopFlag()
        stop.install()
        code, status = 0, "succeeded"
        try:
            for step in self.plan.steps:
                if status != "succeeded":
                    self.results.append(StepResult(step.name, "not run", "an earlier step did not finish"))
                    continue
                if step.decision != "run":
                    kind = "skipped" if step.decision == "skip" else "not selected"
                    self.results.append(StepResult(step.name, kind, step.reason, record=step.record))
                    continue
                if stop.signum:
                    code, status = 128 + stop.signum, "stopped"
                    self.results.append(StepResult(step.name, "not run", "the pipeline was stopped"))
                    continue
                result = self.run_step(step, stop)
                self.results.append(result)
                if result.status != "ran":
                    code, status = result.exit_code or 1, result.status
        finally:
            stop.restore()
        if status == "succeeded" and stop.signum:
            code, status = 128 + stop.signum, "stopped"
        return code, status

    def run_step(self, step: Step, stop: StopFlag) -> StepResult:
        state = self.plan.state
        exclude = (str(state.root),)
        digest = self.planner.input_digest(step)
        previous = state.marker(step.name)
        keep = previous if step.resume and previous and "unreadable" not in previous else None
        began = time.time()
        save = step.req.opts.get("save") if step.req and isinstance(step.stage, TrainingStage) else None
        marker = {
            "step": step.name,
            "stage": step.label,
            "inputs": digest,
            "started": states.now(),
            "first_started": keep["first_started"] if keep else began,
            "baseline": keep.get("baseline") if keep else tracker_state(save),
            "outputs": {out.path: {"kind": out.kind} for out in step.outputs},
        }
        state.start(step.name, marker)
        state.logs.mkdir(parents=True, exist_ok=True)
        log = state.logs / f"{step.name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        command = self.launcher(step.stage_argv())
        index = self.plan.steps.index(step) + 1
        say(f"step {index}/{len(self.plan.steps)} {step.name} ({step.label}) started: {step.reason}; log {log}")
        if step.resume:
            say(f"step {step.name} was stopped before: it continues from its own checkpoint in {save}")
        started = states.now()
        code = run_script("exec " + " ".join(shlex.quote(str(t)) for t in command), log)
        seconds = round(time.time() - began, 1)
        result = StepResult(step.name, "ran", step.reason, code, started, states.now(), seconds, str(log), command)
        if code != 0:
            stopped = code > 128 and (code - 128) in [int(s) for s in FORWARDED]
            result.status = "stopped" if stopped else "failed"
            say(
                f"step {step.name} {'was stopped' if stopped else 'failed'} (exit status {code}) after {seconds} s; "
                f"no record written, so the next run starts with it; log {log}"
            )
            return result
        record = {
            "step": step.name,
            "stage": step.label,
            "command": step.stage_argv(),
            "command_line": step.command_line(),
            "launched": [str(t) for t in command],
            "exit_code": code,
            "started": started,
            "finished": result.finished,
            "seconds": seconds,
            "first_started": marker["first_started"],
            "resumed": step.resume,
            "inputs": digest,
            "outputs": outputs_record(step, exclude),
            "metrics": metrics_of(step, str(log)),
            "log": str(log),
            "tensorboard_dir": step.req.opts.get("tensorboard_dir") if step.req else None,
        }
        state.finish(step.name, record)
        result.record = record
        say(f"step {step.name} finished in {seconds} s")
        return result


# -- --dry-run --------------------------------------------------------------------------------------
def _strip_shebang(text: str) -> str:
    lines = text.splitlines()
    return "\n".join(lines[1:] if lines and lines[0].startswith("#!") else lines)


def comment(text: str) -> str:
    """A bash comment line that stays one line whatever the text holds."""
    return "# " + str(text).replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def dry_run_script(plan: Plan, launcher: Launcher | None = None, precheck: Sequence[str] | None = None) -> str:
    """The whole run as one bash script: each running step in a subshell (its LaunchScript ends in
    ``exec``), skipped steps as comments. With a launcher (the host), each step is its launch line."""
    spec = plan.spec
    out = [
        "#!/usr/bin/env bash",
        comment(f"ascend-llm pipeline {spec.name}: {spec.path}"),
        comment(f"output {spec.output}; records, logs and the report under {plan.state.root}"),
        "# (ascend-llm pipeline also records each step and skips finished ones; this script runs all it shows)",
        "set -eo pipefail",
    ]
    if precheck:
        out += ["", "# ---- the whole run, checked inside the image first"]
        out.append(" ".join(shlex.quote(str(t)) for t in precheck))
    total = len(plan.steps)
    for number, step in enumerate(plan.steps, start=1):
        head = f"---- step {number}/{total} {step.name} ({step.label})"
        if step.decision != "run":
            out += ["", comment(f"{head}: {'skipped' if step.decision == 'skip' else 'not selected'} ({step.reason})")]
            continue
        out += ["", comment(f"{head}: runs ({step.reason})"), comment(step.command_line())]
        out += [comment(f"note: {note}") for note in step.notes]
        out += [comment(f"deferred: {problem}") for problem in step.deferred]
        if launcher is not None:
            out.append(" ".join(shlex.quote(str(t)) for t in launcher(step.stage_argv())))
        elif step.script is not None:
            out += ["(", _strip_shebang(step.script.render()), ")"]
        else:
            out.append(" ".join(shlex.quote(str(t)) for t in in_image(step.stage_argv())))
    return "\n".join(out) + "\n"


def plan_lines(plan: Plan) -> list[str]:
    """The plan as a short table for the terminal."""
    width = max(len(s.name) for s in plan.steps)
    label = max(len(s.label) for s in plan.steps)
    lines = [f"pipeline {plan.spec.name} ({plan.spec.path}): {len(plan.steps)} steps, output {plan.spec.output}"]
    for number, step in enumerate(plan.steps, start=1):
        what = {"run": "run", "skip": "skip", "not selected": "not selected"}[step.decision]
        lines.append(f"  {number:>2} {step.name:<{width}}  {step.label:<{label}}  {what}: {step.reason}")
        lines += [f"       note: {note}" for note in step.notes]
        lines += [f"       deferred: {problem}" for problem in step.deferred]
    return lines


def write_lines(lines: list[str]) -> None:
    for line in lines:
        say(line)

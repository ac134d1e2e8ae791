"""The run report: ``<output>/pipeline/report.json`` and ``report.md`` (plus ``loss-<step>.png``).

Written at the end of every run, also when a step failed or the run was stopped. The JSON is made
by ``json.dumps``; every piece of user or data text in the Markdown (paths, labels from the business
data set, commands) goes through ``md_text`` or ``md_code``, so nothing in it can become markup.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import quote

from ascend_llm.pipeline import curves
from ascend_llm.pipeline.execute import StepResult
from ascend_llm.pipeline.plan import Plan, Step
from ascend_llm.stages.training import TrainingStage

_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def md_text(value: Any) -> str:
    """Plain text for Markdown: every ASCII punctuation character backslash-escaped, one line."""
    text = " ".join(str(value).split())
    return _PUNCTUATION.sub(r"\\\1", text)


def md_code(value: Any) -> str:
    """Inline code that survives any content: a fence longer than any backtick run, pipes escaped
    (GitHub tables split cells on '|' even inside code)."""
    text = " ".join(str(value).split())
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    return f"{fence}{pad}{text.replace('|', chr(92) + '|')}{pad}{fence}"


def _step_entry(step: Step, result: StepResult) -> dict[str, Any]:
    record = result.record or {}
    return {
        "name": step.name,
        "stage": step.label,
        "status": result.status,
        "reason": result.reason,
        "exit_code": result.exit_code if result.exit_code is not None else record.get("exit_code"),
        "started": result.started or record.get("started"),
        "finished": result.finished or record.get("finished"),
        "seconds": result.seconds if result.seconds is not None else record.get("seconds"),
        "command": record.get("command_line") or (step.command_line() if step.argv is not None else None),
        "log": result.log or record.get("log"),
        "outputs": [{"path": o.path, "kind": o.kind} for o in step.outputs],
        "metrics": record.get("metrics") or {},
        "resumed": bool(record.get("resumed")) if record else step.resume,
    }


def loss_curve(plan: Plan, step: Step, result: StepResult) -> dict[str, Any] | None:
    """Draw the step's loss PNG from its TensorBoard events; None for steps that do not train."""
    if not isinstance(step.stage, TrainingStage) or step.req is None:
        return None
    if result.status in ("not run", "not selected"):
        return None
    directory = step.req.opts.get("tensorboard_dir")
    if not directory:
        return {"note": "TensorBoard is off for this step (tensorboard_dir: none)"}
    record = result.record or plan.state.marker(step.name) or {}
    since = float(record.get("first_started") or 0)
    png = str(plan.state.root / f"loss-{step.name}.png")
    try:
        series = curves.read_losses(directory, since)
        if not series:
            return {"events": directory, "note": "no loss scalars in the TensorBoard events yet"}
        label = f" ({step.label})" if step.label != step.name else ""
        curves.draw(series, png, f"{plan.spec.name}: step {step.name}{label}, {len(series[0].points)} iterations")
    except curves.CurvesUnavailable as exc:
        return {"events": directory, "note": f"not drawn: {exc}; pip install 'ascend-llm[image]'"}
    first = series[0]
    steps = sorted(first.points)
    return {
        "png": png,
        "events": directory,
        "tag": first.tag,
        "points": len(steps),
        "first": [steps[0], first.points[steps[0]]],
        "last": [steps[-1], first.points[steps[-1]]],
        "continued_at": first.resumed_at,
    }


def build(plan: Plan, results: list[StepResult], status: str, code: int, started: str, finished: str) -> dict:
    steps = []
    evaluation: dict[str, Any] = {}
    for step, result in zip(plan.steps, results):
        entry = _step_entry(step, result)
        curve = loss_curve(plan, step, result)
        if curve is not None:
            entry["loss_curve"] = curve
        metrics = entry["metrics"]
        if "accuracy" in metrics:
            evaluation[step.name] = {"kind": "accuracy", "report": metrics.get("report"), **metrics["accuracy"]}
        if "benchmark" in metrics:
            evaluation[step.name] = {"kind": "benchmark", **metrics["benchmark"]}
        steps.append(entry)
    return {
        "pipeline": plan.spec.name,
        "file": str(plan.spec.path),
        "output": plan.spec.output,
        "status": status,
        "exit_code": code,
        "started": started,
        "finished": finished,
        "steps": steps,
        "evaluation": evaluation,
    }


def _duration(seconds: Any) -> str:
    if seconds is None:
        return ""
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s"


def markdown(report: dict[str, Any], root: str) -> str:
    lines = [
        f"# Pipeline {md_text(report['pipeline'])}: {md_text(report['status'])}",
        "",
        f"- file: {md_code(report['file'])}",
        f"- output: {md_code(report['output'])}",
        f"- started {md_text(report['started'])}, finished {md_text(report['finished'])}, "
        f"exit status {md_text(report['exit_code'])}",
        "",
        "## Steps",
        "",
        "| # | step | stage | status | time | output |",
        "|---|---|---|---|---|---|",
    ]
    for number, step in enumerate(report["steps"], start=1):
        outputs = "<br>".join(md_code(o["path"]) for o in step["outputs"]) or ""
        status = md_text(step["status"]) + (" \\(continued\\)" if step.get("resumed") else "")
        lines.append(
            f"| {number} | {md_text(step['name'])} | {md_text(step['stage'])} | {status} | "
            f"{md_text(_duration(step['seconds']))} | {outputs} |"
        )
    lines.append("")
    for step in report["steps"]:
        if step["status"] in ("failed", "stopped"):
            lines.append(
                f"Step {md_text(step['name'])} {md_text(step['status'])} with exit status "
                f"{md_text(step['exit_code'])}; log: {md_code(step['log'])}"
            )
            lines.append("")
    evaluation = report["evaluation"]
    if evaluation:
        lines += ["## Evaluation", ""]
        for name, result in evaluation.items():
            if result["kind"] == "benchmark":
                score = result.get("score")
                shown = f"{score:.4f}" if isinstance(score, float) else "no score found in the log"
                detail = f" \\({result['correct']}/{result['total']}\\)" if result.get("total") else ""
                lines += [f"- {md_text(name)}: {md_text(result.get('task'))} score **{shown}**{detail}", ""]
                continue
            acc = result.get("accuracy")
            shown = f"{acc:.4f}" if isinstance(acc, (int, float)) else "?"
            lines += [
                f"- {md_text(name)}: business accuracy **{shown}** \\({md_text(result.get('correct'))}/"
                f"{md_text(result.get('total'))}\\), report {md_code(result.get('report'))}",
                "",
                "| label | correct | total | accuracy |",
                "|---|---|---|---|",
            ]
            for label, bucket in (result.get("per_label") or {}).items():
                lines.append(
                    f"| {md_text(label) or md_text('(empty)')} | {md_text(bucket.get('correct'))} | "
                    f"{md_text(bucket.get('total'))} | {md_text(format(bucket.get('accuracy', 0), '.4f'))} |"
                )
            lines.append("")
    curves_shown = [s for s in report["steps"] if s.get("loss_curve")]
    if curves_shown:
        lines += ["## Loss curves", ""]
        for step in curves_shown:
            curve = step["loss_curve"]
            if curve.get("png"):
                rel = os.path.relpath(curve["png"], root)
                lines.append(f"![{md_text(step['name'])} loss]({quote(rel)})")
                lines.append("")
                lines.append(
                    f"{md_text(step['name'])}: {md_text(curve['tag'])} from "
                    f"{md_text(format(curve['first'][1], '.4g'))} at iteration {md_text(curve['first'][0])} to "
                    f"{md_text(format(curve['last'][1], '.4g'))} at iteration {md_text(curve['last'][0])}; "
                    f"events {md_code(curve['events'])}"
                )
            else:
                lines.append(f"{md_text(step['name'])}: {md_text(curve['note'])}")
            lines.append("")
    lines += ["## Commands", ""]
    for step in report["steps"]:
        if step.get("command"):
            lines.append(f"- {md_text(step['name'])}: {md_code(step['command'])}")
    return "\n".join(lines) + "\n"


def write(plan: Plan, report: dict[str, Any]) -> tuple[str, str]:
    """report.json and report.md under ``<output>/pipeline``, each written atomically."""
    root = plan.state.root
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (
        ("report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n"),
        ("report.md", markdown(report, str(root))),
    ):
        path = root / name
        tmp = root / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        paths.append(str(path))
    return paths[0], paths[1]

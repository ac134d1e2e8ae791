"""``invoke pipeline``: run a pipeline file from the host, each step in the image.

The plan, the records, the skipping and the report are the stage runner's (``ascend_llm.pipeline``,
installed next to the builder: ``pip install -e ./entrypoints``). What the host adds is the launcher:
each step runs as ``docker run ... IMAGE <stage> ...``, the very line ``invoke run`` writes
(``run.docker_run``), and before the first step the whole run is checked inside the image
(``docker run ... IMAGE pipeline FILE --check``), where the entry scripts, transformers, the release
and the NPUs are. Every path the file names must be visible at the same path inside, so each one
has to lie under a ``--mount``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import UserError
from .run import RunOptions, check_host, docker_run, parse_mount


@dataclass
class PipelineOptions:
    """What ``invoke pipeline`` was given (see ``tasks.py`` for the help of each)."""

    file: str
    run: RunOptions
    start_from: str | None = None
    only: str | None = None
    inputs: Sequence[str] = field(default_factory=list)
    output: str | None = None
    dry_run: bool = False
    check: bool = False


def _engine():
    try:
        from ascend_llm import pipeline as engine
        from ascend_llm.errors import AscendLLMError
    except ImportError:
        raise UserError(
            "invoke pipeline needs the stage runner next to the builder: pip install -e ./entrypoints"
        ) from None
    return engine, AscendLLMError


def _selection(opts: PipelineOptions) -> list[str]:
    args: list[str] = []
    if opts.start_from:
        args += ["--from", opts.start_from]
    if opts.only:
        args += ["--only", opts.only]
    for item in opts.inputs:
        args += ["--input", item]
    if opts.output:
        args += ["--output", opts.output]
    return args


def _unmounted(paths: Sequence[str], mounts: Sequence[str]) -> list[str]:
    """Paths that no --mount makes visible at the same path in the container."""
    targets = []
    for spec in mounts:
        source, target, _ = parse_mount(spec)
        if source == target:
            targets.append(target.rstrip("/") or "/")
    return [p for p in paths if not any(p == t or p.startswith(t.rstrip("/") + "/") for t in targets)]


def run_pipeline(opts: PipelineOptions) -> int:
    """Check (in the image), then run or print the pipeline; the exit status of the run."""
    engine, engine_error = _engine()
    file = os.path.abspath(opts.file)
    base = replace(opts.run, command=["pipeline", file, "--check", *_selection(opts)])
    precheck = docker_run(base)
    from ascend_llm.pipeline.spec import load_spec
    from ascend_llm.stages import STAGES

    try:
        spec = load_spec(Path(file), STAGES, engine.parse_inputs(opts.inputs), opts.output)
    except engine_error as exc:
        raise UserError("\n".join(exc.lines)) from None
    paths = [file, spec.output, *spec.inputs.values()]
    missing = _unmounted(paths, opts.run.mounts)
    if missing:
        raise UserError(
            f"{', '.join(missing)}: not under any --mount, so the steps would not see them in the container; "
            f"add --mount DIR (mounted at the same path), e.g. --mount {os.path.dirname(missing[0])}"
        )

    def launcher(stage_argv: Sequence[str]) -> list[str]:
        return docker_run(replace(opts.run, command=[str(t) for t in stage_argv])).argv

    if not opts.dry_run:
        check_host(precheck)
    try:
        return engine.run(
            file,
            dry_run=opts.dry_run,
            check=opts.check,
            start_from=opts.start_from,
            only=opts.only,
            inputs=engine.parse_inputs(opts.inputs),
            output=opts.output,
            launcher=launcher,
            preflight_here=False,
            precheck=precheck.argv,
        )
    except engine_error as exc:
        for line in exc.lines:
            sys.stderr.write(f"ascend-llm: {line}\n")
        return exc.exit_code

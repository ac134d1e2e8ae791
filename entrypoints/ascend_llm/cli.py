"""``ascend-llm``: the container's entrypoint.

``ascend-llm <stage> [options] [-- upstream args]`` runs a stage; any other first word runs as a
plain command (``docker run -it IMAGE bash``). Errors the user can fix end in one line on stderr
and exit 2 (usage, preflight), never a traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Sequence

from ascend_llm import __version__, chip
from ascend_llm.config import load_config
from ascend_llm.errors import AscendLLMError, Stopped, UsageError
from ascend_llm.launcher import resolve_rendezvous
from ascend_llm.options import RENDEZVOUS, resolve
from ascend_llm.pipeline import SUMMARY as PIPELINE_SUMMARY
from ascend_llm.preflight import transformers_missing_note
from ascend_llm.presets import available_presets, load_preset
from ascend_llm.release import read_stack, resolve_release
from ascend_llm.runner import run_script
from ascend_llm.script import printable
from ascend_llm.stages import STAGES
from ascend_llm.stages.base import Stage, StageRequest, absolute_paths, log_file
from ascend_llm.stages.check import CheckStage
from ascend_llm.stages.evaluate import EvaluateStage


def usage() -> str:
    """The top-level help: every stage with one line."""
    width = max(len(name) for name in STAGES) + 2
    lines = [
        f"ascend-llm {__version__}: MindSpeed-LLM pipeline stages as container commands",
        "",
        "usage: ascend-llm <stage> [options] [-- MindSpeed-LLM args...]",
        "       ascend-llm <command> [args...]   any other first word runs as a plain command, e.g. bash",
        "",
        "stages:",
    ]
    lines += [f"  {name:<{width}}{stage.summary}" for name, stage in STAGES.items()]
    lines += [f"  {'pipeline':<{width}}{PIPELINE_SUMMARY}"]
    lines += [
        "",
        f"models (--model): {', '.join(available_presets())}",
        "common options: --model --load --save --data --tokenizer --tp --pp --cp --seq-length --mbs --gbs",
        "  --train-iters --lr --nproc-per-node --nnodes --node-rank --master-addr --master-port",
        "  --config FILE.yaml (flags win) --dry-run (print the runnable script) -- ARGS (passed through)",
        "",
        "Run 'ascend-llm <stage> --help' for a stage's options and their defaults.",
    ]
    return "\n".join(lines)


def split_passthrough(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split at the first ``--``: our options, then MindSpeed-LLM's."""
    argv = list(argv)
    if "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1 :]
    return argv, []


def mode_of(stage: Stage, flags: dict[str, Any], config: dict[str, Any]) -> str | None:
    """The positional action, or evaluate's task (it decides whether MindSpeed-LLM runs)."""
    if isinstance(stage, EvaluateStage):
        return flags.get("task") or config.get("task")
    return flags.get("action")


def build_request(stage: Stage, argv: Sequence[str]) -> StageRequest:
    """argv + --config + launcher env -> StageRequest (see the design sketch)."""
    own, extra = split_passthrough(argv)
    namespace = stage.parser().parse_args(own)
    flags = {k: v for k, v in vars(namespace).items() if v is not None}
    options = stage.options()
    config: dict[str, Any] = {}
    if flags.get("config"):
        all_dests = {o.dest for s in STAGES.values() for o in s.options()}
        config, config_extra = load_config(flags["config"], stage.name, options, all_dests, STAGES)
        extra = config_extra + extra
    action = mode_of(stage, flags, config)
    release = None
    if stage.uses_mindspeed(action):
        release = resolve_release(flags.get("release") or config.get("release"), read_stack())
    model = flags.get("model") or config.get("model")
    preset = load_preset(model) if model else None
    if preset and release:
        preset = release.preset(preset)
    if stage.needs_model(action) and preset is None:
        raise UsageError(f"{stage.name} needs --model: one of {', '.join(available_presets())} (or a preset YAML file)")
    section = stage.preset_section(action, {**config, **flags})
    preset_values = preset.stage(section).values if preset and section else {}
    opts = resolve(options, flags, config, preset_values)
    rdzv = None
    if stage.uses_torchrun(action):
        rdzv = resolve_rendezvous(flags, config, preset_values, os.environ)
        for key in RENDEZVOUS:
            opts[key] = getattr(rdzv, key)
    raw = dict(opts)
    absolute_paths(opts)
    req = StageRequest(
        stage=stage.name,
        action=action,
        opts=opts,
        explicit=set(flags) | set(config),
        preset=preset,
        release=release,
        rdzv=rdzv,
        extra=extra,
        raw=raw,
        flags_given=set(flags),
    )
    stage.validate(req)
    return req


def run_stage(stage: Stage, argv: Sequence[str]) -> int:
    """Preflight, then print (--dry-run) or run the stage's LaunchScript."""
    req = build_request(stage, argv)
    if isinstance(stage, CheckStage):
        return stage.execute(req)
    if req.opts.get("no_preflight"):
        if not req.dry_run:
            raise UsageError("--no-preflight only goes with --dry-run: a real run always checks first")
        problems: list[str] = []
        req.notes.append("preflight skipped (--no-preflight): paths, data and checkpoint were not checked")
    else:
        # The chip guard first: on another chip's host nothing else matters (and nothing blocks without NPUs).
        problems = chip.guard(read_stack()) + stage.preflight(req)
    note = transformers_missing_note() if req.preset else None
    if note:
        req.notes.append(note)
    for note in req.notes:
        say(note)
    if problems:
        raise AscendLLMError(*problems)
    script = stage.compose(req)
    log = log_file(req) if stage.name != "tensorboard" else None
    if log:
        script.notes.append(
            f"log: {log.parent}/{log.name.rsplit('-', 2)[0]}-<time>.log "
            f"(ascend-llm tees the output there when it runs this)"
        )
    text = script.render()
    if req.dry_run:
        sys.stdout.write(text)
        return 0
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
        say(f"logging to {log}")
        with open(log, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write("".join(f"# {line}\n" for line in text.splitlines()))
    stage.before_run(req)
    stops: list[int] = []
    code = run_script(text, log, graceful_term=stage.graceful_term(req), watch=stage.watcher(req), stops=stops)
    where = f"; log: {log}" if log else ""
    if stops:
        name = signal.Signals(stops[0]).name
        say(f"{req.label} stopped by {name} (exit status {code}); what it completed is kept{where}")
    elif code and log:
        say(f"{req.label} failed with exit status {code}{where}")
    stage.after_run(req, code)
    return code


def run_command(argv: Sequence[str]) -> int:
    """Replace this process with a plain command (``docker run -it IMAGE bash``)."""
    try:
        os.execvp(argv[0], list(argv))
    except FileNotFoundError:
        raise AscendLLMError(
            f"'{argv[0]}' is neither a stage ({', '.join(STAGES)}) nor a command on PATH; see ascend-llm --help",
            exit_code=127,
        ) from None
    except PermissionError:
        raise AscendLLMError(f"'{argv[0]}' is not executable", exit_code=126) from None
    except OSError as exc:
        raise AscendLLMError(f"cannot run '{argv[0]}': {exc.strerror}", exit_code=126) from None
    return 0  # pragma: no cover - execvp does not return


def say(message: str) -> None:
    """One line on stderr, whatever the message holds (a newline in a path is shown as \\n)."""
    sys.stderr.write(f"ascend-llm: {printable(message, backslashes=False)}\n")


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # bytes that are not UTF-8 (in a path) reach --dry-run output and the script unchanged, never a traceback
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="surrogateescape")
    handler = signal.signal(signal.SIGTERM, _stop) if threading.current_thread() is threading.main_thread() else None
    try:
        if not args or args[0] in ("-h", "--help", "help"):
            print(usage())
            return 0
        if args[0] in ("-V", "--version"):
            print(f"ascend-llm {__version__}")
            return 0
        if args[0] in STAGES:
            return run_stage(STAGES[args[0]], args[1:])
        if args[0] == "pipeline":
            from ascend_llm import pipeline

            return pipeline.main(args[1:])
        if args[0].startswith("-"):
            raise UsageError(
                f"unknown option {args[0]}: the first word must be a stage "
                f"({', '.join(STAGES)}) or a command; see ascend-llm --help"
            )
        return run_command(args)
    except AscendLLMError as exc:
        for line in exc.lines:
            say(line)
        return exc.exit_code
    except (KeyboardInterrupt, Stopped) as exc:
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        say(f"stopped by {signal.Signals(signum).name}")
        return 128 + signum
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    raise SystemExit(main())

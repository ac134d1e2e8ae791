"""What every stage shares: its parser, the StageRequest it builds, and command pieces.

A stage is a small object that knows its entry script, which options it takes, which preflight
rules apply and how to compose its LaunchScript. The flow is the same for all of them:
argv + --config + launcher env -> StageRequest -> preflight -> LaunchScript -> dry-run or run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ascend_llm.environment import libgomp_preloads, parse_env_assignments, stage_env
from ascend_llm.errors import UsageError
from ascend_llm.launcher import Rendezvous
from ascend_llm.options import Option
from ascend_llm.presets import Preset, available_presets, load_preset_file
from ascend_llm.release import Command, Release, read_stack, resolve_release
from ascend_llm.script import Arg, LaunchScript, args_from, cann_setup, group_tokens

PATH_OPTIONS = {
    "load",
    "save",
    "data",
    "tokenizer",
    "input",
    "output_prefix",
    "log_dir",
    "lora_load",
    "hf_dir",
    "output",
    "logdir",
}

# Upstream flags a user must set through our options, because preflight checks them.
RESERVED = {
    "--tensor-model-parallel-size": "--tp",
    "--pipeline-model-parallel-size": "--pp",
    "--context-parallel-size": "--cp",
    "--num-layers-per-virtual-pipeline-stage": "--vpp",
    "--load": "--load",
    "--save": "--save",
    "--data-path": "--data",
    "--tokenizer-name-or-path": "--tokenizer",
    "--seq-length": "--seq-length",
    "--micro-batch-size": "--mbs",
    "--global-batch-size": "--gbs",
    "--train-iters": "--train-iters",
    "--lora-r": "--lora-r",
    "--lora-alpha": "--lora-alpha",
    "--lora-target-modules": "--lora-target-modules",
    "--lora-load": "--lora-load",
    "--target-tensor-parallel-size": "--tp",
    "--target-pipeline-parallel-size": "--pp",
    "--load-dir": "--load",
    "--save-dir": "--save",
}


class StageArgumentParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line instead of usage + error, and builds the
    epilog (which reads every preset) only when --help shows it."""

    epilog_factory: Callable[[], str] | None = None

    def format_help(self) -> str:
        if self.epilog_factory is not None:
            self.epilog = self.epilog_factory()
        return super().format_help()

    def error(self, message: str) -> None:  # type: ignore[override]
        stage = self.prog.replace("ascend-llm ", "", 1)
        raise UsageError(f"{stage}: {message} (see {self.prog} --help)")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep our line breaks in descriptions; wider option column."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=100)


@dataclass
class StageRequest:
    """Everything a stage needs: resolved options, preset, release and rendezvous."""

    stage: str
    action: str | None
    opts: dict[str, Any]
    explicit: set[str]
    preset: Preset | None
    release: Release | None
    rdzv: Rendezvous | None
    extra: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    flags_given: set[str] = field(default_factory=set)
    state: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        value = self.opts.get(key)
        return default if value is None else value

    @property
    def dry_run(self) -> bool:
        return bool(self.opts.get("dry_run"))

    @property
    def label(self) -> str:
        return f"{self.stage} {self.action}" if self.action else self.stage


class Stage:
    """Base class; subclasses set the class attributes and implement the hooks."""

    name = ""
    summary = ""
    description = ""
    entry: str | None = None
    actions: Sequence[str] = ()
    action_help = ""
    action_required = True

    # -- declarations ---------------------------------------------------------------------
    def options(self) -> list[Option]:
        """All options of this stage (common + own)."""
        raise NotImplementedError

    def preset_stage(self, action: str | None) -> str | None:
        """Which preset section supplies defaults."""
        return self.name

    def preset_section(self, action: str | None, chosen: Mapping[str, Any]) -> str | None:
        """The preset section for this request; ``chosen`` holds the flag and config values."""
        return self.preset_stage(action)

    def needs_model(self, action: str | None) -> bool:
        return True

    def uses_mindspeed(self, action: str | None) -> bool:
        return True

    def uses_torchrun(self, action: str | None) -> bool:
        return False

    def graceful_term(self, req: StageRequest) -> bool:
        """Deliver the first SIGTERM to the workers only (training stages)."""
        return False

    def command_key(self, req: StageRequest) -> str:
        """The release-table command this request runs (one of release.COMMANDS)."""
        return self.name

    def command(self, req: StageRequest) -> Command:
        """How the request's MindSpeed-LLM release runs it: entry script and flag changes."""
        assert req.release is not None
        return req.release.command(self.command_key(req))

    # -- hooks ------------------------------------------------------------------------------
    def validate(self, req: StageRequest) -> None:
        """Usage-level checks (required options, conflicts); raise UsageError."""

    def preflight(self, req: StageRequest) -> list[str]:
        return []

    def compose(self, req: StageRequest) -> LaunchScript:
        raise NotImplementedError

    def before_run(self, req: StageRequest) -> None:
        """Side effects right before launching (never in --dry-run)."""

    def after_run(self, req: StageRequest, code: int) -> None:
        """Messages after the command finished."""

    def watcher(self, req: StageRequest) -> Callable[[bytes], None] | None:
        """Something that reads the command's output as it runs (see ``runner.run_script``)."""
        return None

    # -- parser -----------------------------------------------------------------------------
    def parser(self) -> StageArgumentParser:
        """argparse for this stage: every option defaults to None so "not given" can be told apart."""
        parser = StageArgumentParser(
            prog=f"ascend-llm {self.name}",
            description=f"{self.summary}\n\n{self.description}".strip(),
            formatter_class=HelpFormatter,
            add_help=True,
        )
        parser.epilog_factory = self.epilog
        if self.actions:
            parser.add_argument(
                "action",
                nargs=None if self.action_required else "?",
                choices=list(self.actions),
                metavar="{" + ",".join(self.actions) + "}",
                help=self.action_help,
            )
        for option in self.options():
            option.add_to(parser)
        return parser

    def epilog(self) -> str:
        """Per-preset defaults of this stage, so --help shows every default concretely."""
        lines = [
            "-- ARGS...               anything after -- goes to MindSpeed-LLM unchanged",
            "Config files: keys are option names (seq_length: 4096); flags win over the file.",
        ]
        stage = self.preset_stage(None)
        keys = [o.preset_key for o in self.options() if o.preset_key]
        if stage and keys:
            try:
                release: Release | None = resolve_release(None, read_stack())
            except UsageError:
                release = None
            lines.append("")
            on = f" on MindSpeed-LLM {release.version}" if release else ""
            lines.append(f"Model presets (--model) and their {stage} defaults{on}:")
            for name, path in available_presets().items():
                try:
                    preset = load_preset_file(path)
                except UsageError:
                    continue
                if release:
                    preset = release.preset(preset)
                values = preset.stage(stage).values
                shown = " ".join(f"{k}={values[k]}" for k in dict.fromkeys(keys) if k in values)
                lines.append(f"  {name:<12} {shown}")
        return "\n".join(lines)

    # -- helpers for subclasses -------------------------------------------------------------
    def require(self, req: StageRequest, *names: str, why: str = "") -> None:
        """One line listing every required option that is missing."""
        missing = [n for n in names if not req.opts.get(n)]
        if missing:
            flags = ", ".join("--" + n.replace("_", "-") for n in missing)
            raise UsageError(f"{req.label} needs {flags}{why} (see ascend-llm {self.name} --help)")

    def forbid(self, req: StageRequest, names: Sequence[str], reason: str) -> None:
        given = [n for n in names if n in req.flags_given and req.opts.get(n) not in (None, False, [])]
        if given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            raise UsageError(f"{req.label} does not take {flags}: {reason}")


def absolute_paths(opts: dict[str, Any]) -> None:
    """Make path options absolute: the command runs in MINDSPEED_LLM_HOME, not the caller's cwd."""
    for key in PATH_OPTIONS:
        value = opts.get(key)
        if isinstance(value, str) and value and value.lower() != "none":
            opts[key] = os.path.abspath(os.path.expanduser(value))


def model_args(preset: Preset) -> list[Arg]:
    """The preset's model flags, in file order."""
    return args_from((f"--{flag}", value) for flag, value in preset.model_flags.items())


def flag_args(flags: dict[str, Any]) -> list[Arg]:
    """A preset stage's extra flags."""
    return args_from((f"--{flag}", value) for flag, value in flags.items())


def tokenizer_args(tokenizer: str) -> list[Arg]:
    return [Arg("--tokenizer-type", ("PretrainedFromHF",)), Arg("--tokenizer-name-or-path", (tokenizer,))]


def passthrough_value(extra: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` among the ``-- ...`` args ("" for a bare switch), None if absent."""
    found = None
    for group in group_tokens(extra):
        if group.flag == flag:
            found = " ".join(group.values)
    return found


def load_formats(req: StageRequest, command: Command) -> tuple[tuple[str, ...], str]:
    """Checkpoint formats this training or inference command loads (see preflight.loadable_formats)."""
    from ascend_llm import preflight

    ckpt_format = passthrough_value(req.extra, "--ckpt-format") or command.add.get("--ckpt-format")
    if passthrough_value(req.extra, "--auto-detect-ckpt-format") is not None:
        ckpt_format = "torch_dist"
    return preflight.loadable_formats(req.release, ckpt_format)


def merge_extra(args: list[Arg], extra: Sequence[str]) -> list[Arg]:
    """Append ``-- ...`` args; a passthrough flag replaces the composed one of the same name."""
    if not extra:
        return args
    groups = group_tokens(extra)
    for group in groups:
        if group.flag in RESERVED:
            raise UsageError(
                f"pass {RESERVED[group.flag]} instead of `-- {group.flag}`: ascend-llm checks it before launching"
            )
        if not group.flag.startswith("-"):
            raise UsageError(
                f"`-- {' '.join(extra)}`: '{group.flag}' is not an option; "
                f"everything after -- must be MindSpeed-LLM options"
            )
    replaced = {g.flag for g in groups}
    return [a for a in args if a.flag not in replaced] + groups


def base_script(
    req: StageRequest,
    title: str,
    program: list[str],
    distributed: bool,
    entry: str | None = None,
    mindspeed: bool = True,
) -> LaunchScript:
    """A LaunchScript with the stage's environment, the libgomp fix and the working dir set."""
    from ascend_llm.system import mindspeed_llm_home

    preset_env = req.preset.stage(req.stage).env if req.preset else {}
    forced = parse_env_assignments(req.opts.get("env"))
    release = f" on MindSpeed-LLM {req.release.version}" if req.release else ""
    model = f" ({req.preset.name})" if req.preset else ""
    script = LaunchScript(
        title=f"ascend-llm {req.label}{model}{release}: {title}",
        program=program,
        entry=entry,
        env=stage_env(distributed, preset_env, forced),
        ld_preload=[] if "LD_PRELOAD" in forced else libgomp_preloads(),
        source_cann=mindspeed,
        cann_scripts=cann_setup(read_stack()),
        cwd=str(mindspeed_llm_home()) if mindspeed else None,
    )
    script.notes = list(req.notes)
    return script


def log_file(req: StageRequest) -> Path:
    """``<log-dir>/<stage>[-action][-nodeN]-<time>.log``."""
    directory = Path(req.get("log_dir") or log_dir_default(req))
    name = req.stage + (f"-{req.action}" if req.action else "")
    if req.rdzv and req.rdzv.nnodes > 1:
        name += f"-node{req.rdzv.node_rank}"
    return directory / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"


def log_dir_default(req: StageRequest) -> str:
    """Next to what the stage writes: <save>/logs (or <hf-dir>/logs), else ./logs."""
    save = req.opts.get("save") or req.opts.get("hf_dir")
    if save:
        return os.path.join(save, "logs")
    load = req.opts.get("load")
    if load and os.path.isdir(load) and os.access(load, os.W_OK | os.X_OK):
        return os.path.join(load, "logs")
    return os.path.abspath("logs")


def python() -> str:
    """The interpreter for MindSpeed-LLM's plain-python entry scripts (the image venv's)."""
    return "python3"


def this_python() -> str:
    """The interpreter running ascend-llm (has ascend_llm importable)."""
    return sys.executable or "python3"

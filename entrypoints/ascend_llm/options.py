"""Options shared by stages, and how each gets its value.

Every option's argparse default is None so we can tell "given" from "not given"; the value is
then resolved as: command-line flag > config file (``--config``) > model preset's stage defaults
> the built-in default shown in ``--help``. (Rendezvous options also read the launcher's
environment: see ``launcher.py``.)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

SUPPRESS_DEFAULT = object()


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def float_text(text: str) -> str:
    """argparse type: a float, kept as typed so the command shows exactly what the user gave."""
    float(text)
    return str(text)


positive_int.__name__ = "integer >= 1"
non_negative_int.__name__ = "integer >= 0"
float_text.__name__ = "number"


@dataclass
class Option:
    """One option: argparse spelling, built-in default and optional preset key."""

    dest: str
    flags: Sequence[str]
    help: str
    default: Any = None
    preset_key: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    default_text: str | None = None

    @property
    def is_switch(self) -> bool:
        return self.kwargs.get("action") in ("store_true", "store_false")

    def with_help(self, help: str, **changes: Any) -> Option:
        """The same option with another help text (and other changed fields)."""
        return replace(self, help=help, **changes)

    def help_text(self) -> str:
        if self.default_text is not None:
            shown = self.default_text
        elif self.preset_key:
            shown = "from --model, see below"
        elif self.is_switch:
            shown = "off"
        elif self.default is None:
            shown = "none"
        elif isinstance(self.default, (list, tuple)):
            shown = " ".join(str(v) for v in self.default)
        else:
            shown = str(self.default)
        return f"{self.help} (default: {shown})"

    def add_to(self, parser: argparse._ActionsContainer) -> None:
        kwargs = dict(self.kwargs)
        kwargs.setdefault("default", None)
        parser.add_argument(*self.flags, dest=self.dest, help=self.help_text(), **kwargs)

    def convert(self, value: Any, where: str) -> Any:
        """Check and convert a value from a config file the way argparse would."""
        from ascend_llm.errors import UsageError

        name = self.flags[0]
        if self.is_switch:
            if not isinstance(value, bool):
                raise UsageError(f"{where}: '{self.dest}' must be true or false (it is the switch {name})")
            return value
        nargs = self.kwargs.get("nargs")
        action = self.kwargs.get("action")
        if nargs in ("+", "*") or action == "append":
            items = value if isinstance(value, list) else [value]
            return [self._one(item, where) for item in items]
        if isinstance(value, (list, dict)):
            raise UsageError(f"{where}: '{self.dest}' takes one value ({name}), got {type(value).__name__}")
        return self._one(value, where)

    def _one(self, value: Any, where: str) -> Any:
        from ascend_llm.errors import UsageError

        kind: Callable[[str], Any] = self.kwargs.get("type", str)
        try:
            converted = kind(str(value))
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise UsageError(
                f"{where}: '{self.dest}': {value!r} is not a valid {getattr(kind, '__name__', 'value')} ({exc})"
                if str(exc)
                else f"{where}: '{self.dest}': bad value {value!r}"
            ) from None
        choices = self.kwargs.get("choices")
        if choices and converted not in choices:
            raise UsageError(f"{where}: '{self.dest}': {value!r} is not one of {', '.join(map(str, choices))}")
        return converted


def opt(
    dest: str,
    *flags: str,
    help: str,
    default: Any = None,
    preset_key: str | None = None,
    default_text: str | None = None,
    **kwargs: Any,
) -> Option:
    """Shorthand for Option(...)."""
    return Option(dest, flags or (f"--{dest.replace('_', '-')}",), help, default, preset_key, kwargs, default_text)


COMMON: dict[str, Option] = {
    o.dest: o
    for o in (
        opt("model", help="model preset name or a preset YAML file", metavar="NAME|FILE"),
        opt("load", help="Megatron checkpoint directory to load", metavar="DIR"),
        opt("save", help="directory the checkpoint is saved to", metavar="DIR"),
        opt("data", help="data prefix written by `ascend-llm preprocess`", metavar="PREFIX"),
        opt("tokenizer", help="HuggingFace tokenizer directory (the original HF model dir)", metavar="DIR"),
        opt("tp", help="tensor-parallel size", preset_key="tp", type=positive_int, metavar="N"),
        opt("pp", help="pipeline-parallel size", preset_key="pp", type=positive_int, metavar="N"),
        opt(
            "cp",
            help="context-parallel size",
            preset_key="cp",
            type=positive_int,
            metavar="N",
            default_text="from --model, else 1",
        ),
        opt(
            "vpp",
            help="layers per virtual pipeline stage (--num-layers-per-virtual-pipeline-stage)",
            preset_key="vpp",
            type=positive_int,
            metavar="N",
            default_text="from --model, else none",
        ),
        opt("seq_length", help="sequence length", preset_key="seq_length", type=positive_int, metavar="N"),
        opt("mbs", help="micro-batch size per data-parallel rank", preset_key="mbs", type=positive_int, metavar="N"),
        opt("gbs", help="global batch size", preset_key="gbs", type=positive_int, metavar="N"),
        opt("train_iters", help="training iterations", preset_key="train_iters", type=positive_int, metavar="N"),
        opt("lr", help="peak learning rate", preset_key="lr", type=float_text, metavar="LR"),
        opt(
            "nproc_per_node",
            help="processes (NPUs) per node; also from LOCAL_WORLD_SIZE, PET_NPROC_PER_NODE",
            preset_key="nproc_per_node",
            type=positive_int,
            metavar="N",
        ),
        opt(
            "nnodes",
            help="number of nodes; also from NNODES, PET_NNODES, MindCluster/Volcano WORLD_SIZE",
            preset_key="nnodes",
            type=positive_int,
            metavar="N",
            default_text="from --model, else 1",
        ),
        opt(
            "node_rank",
            help="this node's rank; also from NODE_RANK, PET_NODE_RANK, RANK",
            type=non_negative_int,
            metavar="N",
            default=0,
        ),
        opt("master_addr", help="rank-0 node address; also from MASTER_ADDR", default="localhost", metavar="HOST"),
        opt(
            "master_port",
            help="rank-0 node port; also from MASTER_PORT",
            default=6000,
            type=positive_int,
            metavar="PORT",
        ),
        opt("config", help="YAML file with option values (keys as option names); flags win", metavar="FILE"),
        opt(
            "dry_run",
            help="print the runnable bash script (exports + exact command) after preflight; run nothing",
            action="store_true",
        ),
        opt(
            "no_preflight",
            help="with --dry-run: skip the checks, to compose a command for paths that exist only elsewhere",
            action="store_true",
        ),
        opt(
            "log_dir",
            help="directory for the log file",
            metavar="DIR",
            default_text="<save>/logs, else <load>/logs if writable, else ./logs",
        ),
        opt(
            "env",
            help="force an environment variable in the launch script (repeatable)",
            metavar="NAME=VALUE",
            action="append",
        ),
        opt(
            "release",
            help="MindSpeed-LLM release to target",
            metavar="X.Y.Z",
            default_text="mindspeed_llm.release of /etc/ascend-llm-stack/stack.json, else 2.1.0",
        ),
    )
}

RENDEZVOUS = ("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port")


def common(*names: str, required: Sequence[str] = (), **help_overrides: str) -> list[Option]:
    """Common options by name, with per-stage help texts where the meaning is narrower."""
    out = []
    for name in names:
        option = COMMON[name]
        if name in help_overrides:
            option = option.with_help(help_overrides[name])
        if name in required:
            option = replace(option, default_text="required")
        out.append(option)
    return out


def resolve(
    options: Sequence[Option], flags: Mapping[str, Any], config: Mapping[str, Any], preset_values: Mapping[str, Any]
) -> dict[str, Any]:
    """flag > config > preset > built-in default, for every option."""
    values: dict[str, Any] = {}
    for option in options:
        for source in (flags, config):
            if source.get(option.dest) is not None:
                values[option.dest] = source[option.dest]
                break
        else:
            preset_value = preset_values.get(option.preset_key) if option.preset_key else None
            values[option.dest] = preset_value if preset_value is not None else option.default
    return values

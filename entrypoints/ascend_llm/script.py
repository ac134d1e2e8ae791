"""LaunchScript: the environment exports and the one command a stage runs.

``--dry-run`` prints ``render()``; a real run executes exactly the same text with bash, so what
the user reviewed is what runs. The command ends in ``exec`` so the stage runner's child *is*
torchrun/python and signals reach it directly.
"""

from __future__ import annotations

import shlex
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ascend_llm.environment import EnvVar

INPUT_DELIMITER = "ASCEND_LLM_INPUT"
# (variable that tells the environment is there, set_env.sh and its arguments): CANN before 8.5.
CANN_SETUP: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ASCEND_TOOLKIT_HOME", ("/usr/local/Ascend/ascend-toolkit/set_env.sh",)),
    ("ATB_HOME_PATH", ("/usr/local/Ascend/nnal/atb/set_env.sh",)),
)


def cann_setup(stack: dict | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The set_env.sh scripts of the image's CANN layout (stack.json ``cann_layout``), NNAL's with torch's ABI."""
    layout = (stack or {}).get("cann_layout") or {}
    if not layout.get("set_env") or not layout.get("nnal_set_env"):
        return CANN_SETUP
    nnal = [str(layout["nnal_set_env"])]
    if layout.get("cxx_abi") in (0, 1):
        nnal.append(f"--cxx_abi={layout['cxx_abi']}")
    return (("ASCEND_TOOLKIT_HOME", (str(layout["set_env"]),)), ("ATB_HOME_PATH", tuple(nnal)))


@dataclass
class Arg:
    """One option of the command and its values, rendered on one line."""

    flag: str
    values: tuple[str, ...] = ()

    def tokens(self) -> list[str]:
        return [self.flag, *self.values]


def is_flag(token: str) -> bool:
    """``--x`` or ``-x`` but not a negative number such as ``-1`` or ``-1e-5``."""
    if not token.startswith("-") or token == "-":
        return False
    try:
        float(token)
    except ValueError:
        return True
    return False


def group_tokens(tokens: Sequence[str]) -> list[Arg]:
    """Group a flat argv into options with their values (values before any flag stand alone)."""
    groups: list[Arg] = []
    for token in tokens:
        if is_flag(token) or not groups:
            groups.append(Arg(token))
        else:
            groups[-1] = Arg(groups[-1].flag, (*groups[-1].values, token))
    return groups


def args_from(items: Iterable[tuple[str, object]]) -> list[Arg]:
    """Build Args from (flag, value) pairs: True -> bare flag, False/None -> omitted,
    list/tuple -> several values, anything else -> one value."""
    out: list[Arg] = []
    for flag, value in items:
        if value is None or value is False:
            continue
        if value is True:
            out.append(Arg(flag))
        elif isinstance(value, (list, tuple)):
            out.append(Arg(flag, tuple(str(v) for v in value)))
        else:
            out.append(Arg(flag, (str(value),)))
    return out


def _double_quoted(value: str, in_default: bool = False) -> str:
    """Escape a value for use inside double quotes; ``in_default``: the word of ``"${NAME:-word}"``,
    where an unescaped ``}`` would end the expansion early."""
    for char in ("\\", '"', "$", "`") + (("}",) if in_default else ()):
        value = value.replace(char, "\\" + char)
    return value


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str, backslashes: bool = True) -> str:
    """``text`` on one line: control characters escaped (``\\n``, ``\\x1b``), and backslashes unless told
    not to (a message may already hold a repr); the rest as is."""
    out = []
    for char in text:
        if char == "\\" and not backslashes:
            out.append(char)
        elif char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def comment(text: str) -> str:
    """A ``# ...`` line showing ``text``: a newline in it cannot end the comment and start a command."""
    return "# " + printable(text)


@dataclass
class LaunchScript:
    """Everything a stage runs: env, directories to create, working dir and one command."""

    title: str
    program: list[str]
    args: list[Arg] = field(default_factory=list)
    launcher_args: list[Arg] = field(default_factory=list)
    entry: str | None = None
    env: list[EnvVar] = field(default_factory=list)
    ld_preload: list[str] = field(default_factory=list)
    source_cann: bool = False
    cann_scripts: tuple[tuple[str, tuple[str, ...]], ...] = CANN_SETUP
    make_dirs: list[str] = field(default_factory=list)
    cwd: str | None = None
    stdin_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        """The command as an argv list (what ``exec`` runs)."""
        tokens = list(self.program)
        for arg in self.launcher_args:
            tokens += arg.tokens()
        if self.entry:
            tokens.append(self.entry)
        for arg in self.args:
            tokens += arg.tokens()
        return tokens

    def flag_values(self, flag: str) -> tuple[str, ...] | None:
        """Values of an option of the entry command, or None when it is absent."""
        for arg in self.args:
            if arg.flag == flag:
                return arg.values
        return None

    def render(self) -> str:
        """A runnable bash script: exports, then the command with one option per line."""
        lines = ["#!/usr/bin/env bash", comment(self.title)]
        lines += [comment(note) for note in self.notes]
        lines.append("set -eo pipefail")
        if self.source_cann:
            lines.append("# CANN and NNAL environment: the image's ENV has it; sourced only when missing.")
            for marker, (script, *args) in self.cann_scripts:
                call = " ".join(shlex.quote(word) for word in (script, *args))
                lines.append(f'if [ -z "${{{marker}:-}}" ] && [ -f {shlex.quote(script)} ]; then . {call}; fi')
        for var in self.env:
            if not var.name.isidentifier() or not var.name.isascii():
                raise ValueError(f"not a shell variable name: {var.name!r}")
            note = "  " + comment(var.comment) if var.comment else ""
            default = _double_quoted(var.value, in_default=True)
            value = f'"${{{var.name}:-{default}}}"' if var.overridable else shlex.quote(var.value)
            lines.append(f"export {var.name}={value}{note}")
        if self.ld_preload:
            joined = _double_quoted(":".join(self.ld_preload))
            lines.append(
                "# aarch64: preload libgomp, or imports fail with 'cannot allocate memory in static TLS block'"
            )
            lines.append(f'export LD_PRELOAD="${{LD_PRELOAD:+$LD_PRELOAD:}}{joined}"')
        for directory in self.make_dirs:
            lines.append(f"mkdir -p -- {shlex.quote(directory)}")
        if self.cwd:
            lines.append(f"cd -- {shlex.quote(self.cwd)}")
        head = " ".join(shlex.quote(t) for t in self.program)
        body = [" ".join(shlex.quote(t) for t in arg.tokens()) for arg in self.launcher_args]
        if self.entry:
            body.append(shlex.quote(self.entry))
        body += [" ".join(shlex.quote(t) for t in arg.tokens()) for arg in self.args]
        command = [f"exec {head}"] + [f"    {line}" for line in body]
        if self.stdin_lines:
            if any("\n" in line or line == INPUT_DELIMITER for line in self.stdin_lines):
                raise ValueError("a here-document line holds a newline or the delimiter")  # stages refuse these
            command[-1] += f" <<'{INPUT_DELIMITER}'"
        lines.append(" \\\n".join(command))
        if self.stdin_lines:
            lines += [*self.stdin_lines, INPUT_DELIMITER]
        return "\n".join(lines) + "\n"

"""Exceptions that end a command with one line on stderr instead of a traceback."""

from __future__ import annotations

from typing import Sequence

EXIT_USAGE = 2
"""Bad options, bad config file or a failed preflight: nothing was launched."""
EXIT_CHECKPOINT_NOT_LOADED = 3
"""MindSpeed-LLM printed that it could not load the checkpoint but exited 0."""
EXIT_CHECK_FAILED = 1
"""``ascend-llm check`` found a problem with the image or the host."""


class AscendLLMError(Exception):
    """An error the user can fix; ``cli.main`` prints each line and exits with ``exit_code``."""

    exit_code = EXIT_USAGE

    def __init__(self, *lines: str, exit_code: int | None = None) -> None:
        super().__init__(*lines)
        self.lines = [line for line in lines if line]
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(AscendLLMError):
    """Wrong options or an unusable config file."""


class PreflightFailed(AscendLLMError):
    """One or more preflight rules failed; each line names the problem and its fix."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(*problems)


class Stopped(BaseException):
    """SIGTERM (or SIGINT) arrived outside a running stage: end with one line and 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

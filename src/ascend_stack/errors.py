"""The one error type users see: a single line saying what is wrong and what to do."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


class UserError(Exception):
    """Bad input or environment. Tasks print ``str(err)`` as one line and exit non-zero."""

    exit_code = 2


class Stopped(BaseException):
    """Ctrl-C or SIGTERM: the task ends with one line and exit 128 + ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """Turn SIGTERM and Ctrl-C into :class:`Stopped` while the body runs (outputs are atomic, downloads resume).

    SIGINT gets its handler explicitly, as the stage runner's does: a process started in the
    background of a non-interactive shell inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt for it, so `kill -INT` (a scheduler's, a script's) would do nothing.
    """

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    except KeyboardInterrupt:
        raise Stopped(signal.SIGINT) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

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
    """Turn SIGTERM and Ctrl-C into :class:`Stopped` while the body runs (outputs are atomic, downloads resume)."""

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except KeyboardInterrupt:
        raise Stopped(signal.SIGINT) from None
    finally:
        signal.signal(signal.SIGTERM, previous)

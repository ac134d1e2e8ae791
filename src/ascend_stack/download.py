"""HTTP(S) downloads of big inputs (CANN installers, wheels): resumable, verified, atomic.

Why not ``urllib.request.urlretrieve``: CANN installers are gigabytes behind a download site that
wants a ``Referer`` header, often reached through a corporate proxy with its own CA. A dropped
connection must not cost the whole download again (``<file>.part`` is resumed with a ``Range``
request, guarded by ``If-Range`` so a changed file restarts instead of being spliced), and a
half or wrong file must never appear under the final name (the sha256 is computed while the bytes
arrive and checked before the rename).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from http.client import HTTPException, HTTPResponse
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .errors import UserError

CHUNK = 1 << 20
TIMEOUT = 60.0
USER_AGENT = "ascend-llm-stack"
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")


class ChecksumMismatch(UserError):
    """A file's sha256 differs from what the matrix or the lock expects."""

    def __init__(self, name: str, expected: str, actual: str, source: str, advice: str = "") -> None:
        self.name, self.expected, self.actual, self.source = name, expected, actual, source
        tail = f"; {advice}" if advice else ""
        super().__init__(f"checksum mismatch for {name}: expected sha256 {expected} ({source}), got {actual}{tail}")


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    size: int
    resumed: bool


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _validator_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.validator")


@functools.lru_cache(maxsize=8)
def _ssl_context(ca_cert: str | None) -> ssl.SSLContext:
    """The system's CAs plus ``ca_cert``: a proxy's CA must not break direct connections."""
    context = ssl.create_default_context()
    if ca_cert:
        try:
            context.load_verify_locations(cafile=ca_cert)
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"--ca-cert {ca_cert}: cannot load CA certificates ({exc}); pass a PEM file") from None
    return context


def opener(ca_cert: Path | None = None, *, tls: bool = True) -> urllib.request.OpenerDirector:
    """An opener honouring ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` and, if given, a CA bundle."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler()]  # reads *_proxy, any case
    if tls:
        handlers.append(urllib.request.HTTPSHandler(context=_ssl_context(str(ca_cert) if ca_cert else None)))
    return urllib.request.build_opener(*handlers)


def _progress(enabled: bool) -> Progress:
    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not (enabled and console.is_terminal),
    )


def _http_error(url: str, exc: urllib.error.HTTPError, referer: str | None, dest: Path) -> UserError:
    hint = f"download it by hand into {dest.parent}/ (as {dest.name}) and run again"
    if exc.code in (401, 403) and referer:
        hint = f"the site refused it although Referer: {referer} was sent; {hint}"
    elif exc.code == 404:
        hint = f"check the URL in matrix.yaml, or {hint}"
    elif exc.code == 407:
        hint = "the proxy wants credentials: put them in HTTPS_PROXY (http://user:pass@host:port)"
    return UserError(f"download failed: {url}: HTTP {exc.code} {exc.reason}; {hint}")


def _net_error(url: str, exc: BaseException, dest: Path) -> UserError:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ssl.SSLCertVerificationError):
        hint = "a proxy with its own CA? pass its certificate with --ca-cert FILE"
    else:
        hint = f"check the network or HTTPS_PROXY, or put the file into {dest.parent}/ by hand"
    return UserError(f"download failed: {url}: {reason}; {hint}")


@contextlib.contextmanager
def _open(
    url: str, headers: dict[str, str], ca_cert: Path | None, timeout: float, dest: Path, referer: str | None
) -> Iterator[tuple[int, Message, HTTPResponse | None]]:
    """(status, headers, body) of a GET; 416 comes back as a status (no body), other errors raise."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    try:
        response = opener(ca_cert, tls=url.startswith("https:") or ca_cert is not None).open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416:
            raise _http_error(url, exc, referer, dest) from None
        exc.close()
        yield 416, exc.headers, None
        return
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        raise _net_error(url, exc, dest) from None
    with response:
        yield response.status, response.headers, response


def download(
    url: str,
    dest: Path,
    *,
    referer: str | None = None,
    sha256: str | None = None,
    sha256_source: str = "expected",
    ca_cert: Path | None = None,
    progress: bool = True,
    timeout: float = TIMEOUT,
    advice: str = "",
) -> Downloaded:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial file.

    ``sha256`` (from ``sha256_source``, e.g. "matrix.yaml") is checked before the rename; on a
    mismatch the partial file is deleted and :class:`ChecksumMismatch` raised. A network failure
    keeps the partial file for the next attempt and raises a one-line :class:`UserError`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part, validator_file = part_path(dest), _validator_path(dest)
    have = part.stat().st_size if part.exists() else 0
    validator = validator_file.read_text().strip() if validator_file.exists() else ""
    headers = {"Referer": referer} if referer else {}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator:  # the server sends the whole file instead if it changed since the part began
            headers["If-Range"] = validator

    digest = hashlib.sha256()
    with _open(url, headers, ca_cert, timeout, dest, referer) as (status, reply, body):
        if body is None:  # 416: nothing left to send. The part may be complete; if not, start again.
            match = _UNSATISFIED_RANGE.match(reply.get("Content-Range", ""))
            if not (have and match and int(match.group(1)) == have):
                _discard(dest)
                if not have:
                    raise UserError(f"download failed: {url}: HTTP 416 for a request without a range")
                return download(
                    url, dest, referer=referer, sha256=sha256, sha256_source=sha256_source,
                    ca_cert=ca_cert, progress=progress, timeout=timeout, advice=advice,
                )  # fmt: skip
            _hash_into(digest, part)
            size, resumed = have, True
        else:
            total: int | None
            if status == 206:
                match = _CONTENT_RANGE.match(reply.get("Content-Range", ""))
                if not match or int(match.group(1)) != have:
                    raise UserError(
                        f"download failed: {url}: the server answered the resume request with a wrong range "
                        f"({reply.get('Content-Range')}); delete {part} and run again"
                    )
                _hash_into(digest, part)
                mode, resumed = "ab", True
                total = None if match.group(3) == "*" else int(match.group(3))
            else:  # 200: a fresh download, or a server that ignored Range, or a changed file (If-Range)
                mode, resumed, have = "wb", False, 0
                length = reply.get("Content-Length", "")
                total = int(length) if length.isdigit() else None
            new_validator = reply.get("ETag") or reply.get("Last-Modified") or ""
            if new_validator and not new_validator.startswith("W/"):
                validator_file.write_text(new_validator + "\n")
            else:
                validator_file.unlink(missing_ok=True)
            size = _stream(body, part, mode, digest, have, total, dest.name, progress, url, dest)
            if total is not None and size != total:
                raise UserError(
                    f"download failed: {url}: connection closed after {size} of {total} bytes; "
                    f"run again to resume {part.name}"
                )
    actual = digest.hexdigest()
    if sha256 and actual != sha256:
        _discard(dest)
        raise ChecksumMismatch(dest.name, sha256, actual, sha256_source, advice or "the partial download was deleted")
    os.replace(part, dest)
    validator_file.unlink(missing_ok=True)
    return Downloaded(dest, actual, size, resumed)


def _discard(dest: Path) -> None:
    part_path(dest).unlink(missing_ok=True)
    _validator_path(dest).unlink(missing_ok=True)


def _hash_into(digest: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)


def _stream(
    response: HTTPResponse,
    part: Path,
    mode: str,
    digest: hashlib._Hash,
    start: int,
    total: int | None,
    label: str,
    progress: bool,
    url: str,
    dest: Path,
) -> int:
    """Append the body to ``part`` while hashing it; returns the part's final size."""
    done = start
    with _progress(progress) as bar, part.open(mode) as out:
        task = bar.add_task(label, total=total, completed=start)
        try:
            while block := response.read(CHUNK):
                out.write(block)
                digest.update(block)
                done += len(block)
                bar.update(task, completed=done)
        except (OSError, HTTPException) as exc:
            out.flush()
            raise UserError(
                f"download failed: {url}: interrupted after {done} bytes ({type(exc).__name__}); "
                f"run again to resume {part.name} in {dest.parent}/"
            ) from None
    return done

"""Downloads against a loopback server: Referer, resume, restart, checksum, proxy, CA file, errors."""

from __future__ import annotations

import hashlib
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback_http import LoopbackServer

from ascend_stack.download import ChecksumMismatch, download, part_path
from ascend_stack.errors import UserError

REFERER = "https://www.hiascend.com/"
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, not all one byte value: a spliced file would show
SHA = hashlib.sha256(PAYLOAD).hexdigest()
NAME = "Ascend-cann-toolkit_8.1.RC1_linux-x86_64.run"


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "")


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(files={f"/CANN/{NAME}": PAYLOAD}, require_referer=REFERER) as srv:
        yield srv


def test_downloads_with_the_referer_and_checks_the_hash(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    got = download(server.url(f"/CANN/{NAME}"), dest, referer=REFERER, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert (got.sha256, got.size, got.resumed) == (SHA, len(PAYLOAD), False)
    assert not part_path(dest).exists()
    assert server.requests[0].headers["Referer"] == REFERER
    assert "Range" not in server.requests[0].headers


def test_refusal_is_one_line_naming_the_url(server: LoopbackServer, tmp_path: Path) -> None:
    url = server.url(f"/CANN/{NAME}")
    with pytest.raises(UserError) as err:
        download(url, tmp_path / NAME, progress=False)  # no Referer: the site says 403
    msg = str(err.value)
    assert "\n" not in msg and url in msg and "HTTP 403" in msg and str(tmp_path) in msg
    assert list(tmp_path.iterdir()) == []


def test_404_says_to_check_the_url(server: LoopbackServer, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"HTTP 404 .*check the URL"):
        download(server.url("/CANN/nope.run"), tmp_path / "nope.run", referer=REFERER, progress=False)


def test_partial_file_is_resumed_with_a_range_request(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    part_path(dest).write_bytes(PAYLOAD[:300_000])
    got = download(server.url(f"/CANN/{NAME}"), dest, referer=REFERER, sha256=SHA, progress=False)
    assert server.requests[-1].headers["Range"] == "bytes=300000-"
    assert got.resumed and got.sha256 == SHA and dest.read_bytes() == PAYLOAD


def test_dropped_connection_keeps_the_part_and_the_next_run_resumes(server: LoopbackServer, tmp_path: Path) -> None:
    dest, url = tmp_path / NAME, server.url(f"/CANN/{NAME}")
    server.drop_after[f"/CANN/{NAME}"] = 123_456
    with pytest.raises(UserError, match="run again to resume"):
        download(url, dest, referer=REFERER, sha256=SHA, progress=False)
    assert not dest.exists()
    assert part_path(dest).read_bytes() == PAYLOAD[:123_456]
    got = download(url, dest, referer=REFERER, sha256=SHA, progress=False)
    assert server.requests[-1].headers["Range"] == "bytes=123456-"
    assert got.resumed and dest.read_bytes() == PAYLOAD and not part_path(dest).exists()


def test_server_that_ignores_range_restarts_the_file(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    part_path(dest).write_bytes(b"x" * 1000)  # would corrupt the file if blindly appended to
    server.ignore_range = True
    got = download(server.url(f"/CANN/{NAME}"), dest, referer=REFERER, progress=False)
    assert not got.resumed and got.sha256 == SHA and dest.read_bytes() == PAYLOAD


def test_changed_file_restarts_through_if_range(server: LoopbackServer, tmp_path: Path) -> None:
    dest, path = tmp_path / NAME, f"/CANN/{NAME}"
    server.etags[path] = '"v1"'
    server.drop_after[path] = 5000
    with pytest.raises(UserError):
        download(server.url(path), dest, referer=REFERER, progress=False)
    new = PAYLOAD[::-1]
    server.files[path], server.etags[path] = new, '"v2"'  # republished under the same name
    got = download(server.url(path), dest, referer=REFERER, progress=False)
    assert server.requests[-1].headers["If-Range"] == '"v1"'
    assert not got.resumed and dest.read_bytes() == new


def test_complete_part_answered_with_416_is_finished(server: LoopbackServer, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    part_path(dest).write_bytes(PAYLOAD)
    got = download(server.url(f"/CANN/{NAME}"), dest, referer=REFERER, sha256=SHA, progress=False)
    assert got.resumed and dest.read_bytes() == PAYLOAD and len(server.requests) == 1


def test_checksum_mismatch_leaves_nothing_under_the_final_name(server: LoopbackServer, tmp_path: Path) -> None:
    dest, wrong = tmp_path / NAME, "0" * 64
    with pytest.raises(ChecksumMismatch) as err:
        download(server.url(f"/CANN/{NAME}"), dest, referer=REFERER, sha256=wrong, sha256_source="matrix.yaml")
    msg = str(err.value)
    assert NAME in msg and wrong in msg and SHA in msg and "matrix.yaml" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


def test_progress_is_quiet_when_not_a_terminal(
    server: LoopbackServer, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    download(server.url(f"/CANN/{NAME}"), tmp_path / NAME, referer=REFERER, progress=True)
    assert capfd.readouterr().err == ""


def test_http_proxy_variable_is_honoured(
    server: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", server.base)  # the loopback server plays the proxy
    got = download(f"http://ascend-repo.invalid/CANN/{NAME}", tmp_path / NAME, referer=REFERER, progress=False)
    assert got.sha256 == SHA
    assert server.requests[-1].target == f"http://ascend-repo.invalid/CANN/{NAME}"


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed: cannot make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_ca_file_makes_a_private_https_server_trusted(self_signed: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = self_signed
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with LoopbackServer(files={"/f.run": PAYLOAD}, tls=ctx) as srv:
        with pytest.raises(UserError, match="--ca-cert"):
            download(srv.url("/f.run"), tmp_path / "f.run", progress=False)
        got = download(srv.url("/f.run"), tmp_path / "f.run", ca_cert=cert, progress=False)
    assert got.sha256 == SHA


def test_https_proxy_variable_is_honoured(
    self_signed: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with LoopbackServer(files={"/f.run": PAYLOAD}, tls=ctx) as site, LoopbackServer() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.base)
        got = download(site.url("/f.run"), tmp_path / "f.run", ca_cert=cert, progress=False)
        netloc = site.base.removeprefix("https://")
    assert got.sha256 == SHA
    assert [(r.method, r.target) for r in proxy.requests] == [("CONNECT", netloc)]
    assert [r.target for r in site.requests] == ["/f.run"]


def test_unreadable_ca_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--ca-cert"):
        download("https://127.0.0.1:1/x", tmp_path / "x", ca_cert=tmp_path / "missing.pem", progress=False)


def test_connection_refused_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        download("http://127.0.0.1:1/x.run", tmp_path / "x.run", progress=False)
    assert "http://127.0.0.1:1/x.run" in str(err.value) and "\n" not in str(err.value)

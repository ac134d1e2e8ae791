"""Inputs end to end: find, fetch, verify, lock, list what is missing, place into a build context.

Fixtures, generated here: a loopback HTTP server standing in for Huawei's download site (it wants
the Referer header) and a local git repository standing in for MindSpeed.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from local_git import UpstreamRepo
from loopback_http import LoopbackServer

from ascend_stack import inputs as inputs_mod
from ascend_stack import render
from ascend_stack.download import ChecksumMismatch, part_path
from ascend_stack.inputs import InputDirs, MissingInputs, fetch, layer_digests, resolve_inputs
from ascend_stack.matrix import load_matrix
from ascend_stack.render import BuildPlan, Input, Layer
from ascend_stack.target import resolve

REPO = Path(__file__).resolve().parents[1]
REFERER = "https://www.hiascend.com/"
PKG = "Ascend-cann-toolkit_8.2.RC1_linux-x86_64.run"
PKG2 = "Ascend-cann-nnal_8.2.RC1_linux-x86_64.run"
WHEEL = "demo-1.0-py3-none-any.whl"
PKG_BYTES = b"#!/bin/sh\n# stand-in CANN installer\n" + os.urandom(4096)
TARGET = {"row": "test", "python": "3.11", "arch": "x86_64", "os": "debian-bookworm", "torch": "2.13.0", "chip": "910b"}
UNREACHABLE_GIT = "http://127.0.0.1:1/ascend/MindSpeed.git"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layer(name: str, inputs: list[Input]) -> Layer:
    return Layer(name, None, f"ascend-llm-stack/{name}:t", "", f"{name}/Dockerfile", [], inputs, [], {}, {})


def make_plan(
    server: LoopbackServer, git_url: str, *, published: str | None = None, extra: tuple[Input, ...] = ()
) -> BuildPlan:
    cann = [Input("package", PKG, url=server.url(f"/CANN/{PKG}"), referer=REFERER, sha256=published), *extra]
    return BuildPlan(
        target=dict(TARGET),
        image="ascend-llm-stack:test",
        platform="linux/amd64",
        layers=[
            layer("cann", cann),
            layer("pta", [Input("wheel", "demo==1.0", url=server.url(f"/w/{WHEEL}"))]),
            layer("mindspeed", [Input("git", "mindspeed", url=git_url, ref="main")]),
            layer("runtime", [Input("project", "entrypoints", ref="entrypoints")]),
        ],
    )


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    files = {f"/CANN/{PKG}": PKG_BYTES, f"/CANN/{PKG2}": b"nnal", f"/w/{WHEEL}": b"wheel"}
    with LoopbackServer(files=files, require_referer=None) as srv:
        yield srv


@pytest.fixture
def upstream(tmp_path: Path) -> UpstreamRepo:
    repo = UpstreamRepo(tmp_path / "upstream" / "MindSpeed")
    repo.commit({"setup.py": "# v1\n", "mindspeed/__init__.py": ""}, "v1")
    return repo


@pytest.fixture
def dirs(tmp_path: Path) -> InputDirs:
    return InputDirs.under(tmp_path / "work")


def downloads(server: LoopbackServer) -> list[str]:
    return [r.target for r in server.requests]


def test_first_use_fetches_verifies_records_and_places(
    server: LoopbackServer, upstream: UpstreamRepo, dirs: InputDirs, tmp_path: Path
) -> None:
    server.require_referer, server.referer_prefix = REFERER, "/CANN/"
    plan = make_plan(server, upstream.url)
    got = resolve_inputs(plan, dirs, download=True, offline=False, progress=False)
    commit = upstream.git("rev-parse", "main")
    assert [(r.layer, r.name) for r in got] == [("cann", PKG), ("pta", "demo==1.0"), ("mindspeed", "mindspeed")]
    assert got["cann", PKG].digest == sha(PKG_BYTES) and got["cann", PKG].path == dirs.packages / PKG
    assert got["pta", "demo==1.0"].path == dirs.wheelhouse / WHEEL
    assert got["mindspeed", "mindspeed"].digest == commit and got.commits() == {"mindspeed": commit}
    # trust on first use: everything is in the lock now
    lock = yaml.safe_load((dirs.locks / "test.yaml").read_text())
    assert lock["files"] == {PKG: sha(PKG_BYTES), WHEEL: sha(b"wheel")}
    assert lock["git"] == {"mindspeed": {"main": commit}}
    # the content hash of each layer gets every file hash and commit
    assert layer_digests(got, "cann") == [f"package:{PKG}:sha256:{sha(PKG_BYTES)}"]
    assert got.digests("mindspeed") == [f"git:mindspeed:main:{commit}"]
    assert got.digests("runtime") == []
    # placing: hard links for files, a plain tree for git
    ctx = tmp_path / "ctx"
    placed = got.place("cann", ctx) + got.place("pta", ctx) + got.place("mindspeed", ctx)
    assert placed == [ctx / "packages" / PKG, ctx / "wheelhouse" / WHEEL, ctx / "sources" / "mindspeed"]
    assert (ctx / "packages" / PKG).stat().st_ino == (dirs.packages / PKG).stat().st_ino
    assert (ctx / "sources" / "mindspeed" / "setup.py").read_text() == "# v1\n"
    assert not (ctx / "sources" / "mindspeed" / ".git").exists()
    got.place("cann", ctx)  # placing again is harmless


def test_second_run_needs_no_network(
    server: LoopbackServer, upstream: UpstreamRepo, dirs: InputDirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve_inputs(make_plan(server, upstream.url), dirs, download=True, offline=False, progress=False)
    before = len(server.requests)
    plan = make_plan(server, UNREACHABLE_GIT)  # the git upstream is gone too
    got = resolve_inputs(plan, dirs, download=True, offline=True, progress=False)
    assert len(server.requests) == before and len(got) == 3


def test_tampered_package_stops_before_any_download(
    server: LoopbackServer, upstream: UpstreamRepo, dirs: InputDirs
) -> None:
    resolve_inputs(make_plan(server, upstream.url), dirs, download=True, offline=False, progress=False)
    with (dirs.packages / PKG).open("ab") as fh:
        fh.write(b"\n# tampered")
    tampered = sha((dirs.packages / PKG).read_bytes())
    before = len(server.requests)
    plan = make_plan(server, upstream.url, extra=(Input("package", PKG2, url=server.url(f"/CANN/{PKG2}")),))
    with pytest.raises(ChecksumMismatch) as err:
        resolve_inputs(plan, dirs, download=True, offline=False, progress=False)
    msg = str(err.value)
    assert PKG in msg and sha(PKG_BYTES) in msg and tampered in msg and "test.yaml" in msg
    assert "--update" in msg and "\n" not in msg
    assert len(server.requests) == before and not (dirs.packages / PKG2).exists()


def test_update_accepts_a_new_file_into_the_lock(
    server: LoopbackServer, upstream: UpstreamRepo, dirs: InputDirs
) -> None:
    plan = make_plan(server, upstream.url)
    resolve_inputs(plan, dirs, download=True, offline=False, progress=False)
    (dirs.packages / PKG).write_bytes(b"a newer installer, chosen on purpose")
    got = resolve_inputs(plan, dirs, download=False, offline=True, update=True, progress=False)
    assert got["cann", PKG].digest == sha(b"a newer installer, chosen on purpose")
    assert yaml.safe_load((dirs.locks / "test.yaml").read_text())["files"][PKG] == got["cann", PKG].digest


def test_published_hash_mismatch_downloads_nothing_under_the_final_name(
    server: LoopbackServer, upstream: UpstreamRepo, dirs: InputDirs
) -> None:
    published = "f" * 64
    plan = make_plan(server, upstream.url, published=published)
    with pytest.raises(ChecksumMismatch) as err:
        resolve_inputs(plan, dirs, download=True, offline=False, progress=False)
    msg = str(err.value)
    assert PKG in msg and published in msg and sha(PKG_BYTES) in msg and "matrix.yaml" in msg
    assert not (dirs.packages / PKG).exists() and not part_path(dirs.packages / PKG).exists()
    assert not (dirs.locks / "test.yaml").exists()  # the download stopped first: nothing new to record


def test_local_file_against_the_published_hash(server: LoopbackServer, upstream: UpstreamRepo, dirs: InputDirs) -> None:
    dirs.packages.mkdir(parents=True)
    (dirs.packages / PKG).write_bytes(b"not the published installer")
    with pytest.raises(ChecksumMismatch, match=r"matrix\.yaml, row test"):
        resolve_inputs(make_plan(server, upstream.url, published=sha(PKG_BYTES)), dirs, download=True, offline=False)
    (dirs.packages / PKG).write_bytes(PKG_BYTES)
    got = resolve_inputs(make_plan(server, upstream.url, published=sha(PKG_BYTES)), dirs, download=True, offline=False)
    assert got["cann", PKG].digest == sha(PKG_BYTES)


def test_moving_branch_keeps_the_locked_commit_until_update(
    server: LoopbackServer, upstream: UpstreamRepo, dirs: InputDirs
) -> None:
    plan = make_plan(server, upstream.url)
    old = resolve_inputs(plan, dirs, download=True, offline=False, progress=False)["mindspeed", "mindspeed"].digest
    new = upstream.commit({"setup.py": "# v2\n"}, "v2")
    assert resolve_inputs(plan, dirs, download=True, offline=False)["mindspeed", "mindspeed"].digest == old
    got = resolve_inputs(plan, dirs, download=True, offline=False, update=True)
    assert got["mindspeed", "mindspeed"].digest == new
    assert yaml.safe_load((dirs.locks / "test.yaml").read_text())["git"]["mindspeed"]["main"] == new


def test_offline_lists_every_missing_input_of_the_test_row(dirs: InputDirs) -> None:
    plan, _ = render.plan(resolve(load_matrix(REPO / "matrix.yaml"), "test", arch="x86_64"))
    # one line per input; the OS package folder serves two layers (base, pta) but is one input
    wanted = list({(i.kind, i.name): i for lay in plan.layers for i in lay.inputs if i.kind != "project"}.values())
    with pytest.raises(MissingInputs) as err:
        resolve_inputs(plan, dirs, download=True, offline=True, progress=False)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{len(wanted)} input(s) missing for {plan.image} (offline):"
    assert len(lines) == 1 + len(wanted) and len(err.value.missing) == len(wanted)
    by_name = {m.name.split("@")[0]: str(m) for m in err.value.missing}
    for inp in wanted:
        line = by_name[inp.name]
        if inp.kind == "os":
            assert line.startswith("os debian-bookworm-x86_64: not in ") and "/os/debian-bookworm-x86_64/" in line
            assert "run `invoke fetch --cann test --torch 2.13.0 --arch x86_64" in line
            assert line.endswith("to collect the OS packages of base, pta into it")
        elif inp.kind == "package":
            assert (inp.archive_url or inp.url) in line and f"Referer: {REFERER}" in line  # Huawei's .zip if published
            assert "invoke fetch --cann test --torch 2.13.0 --arch x86_64" in line
        elif inp.kind == "wheel":
            assert "--wheelhouse" in line and "cp311, x86_64" in line
        else:
            assert f"mirror {inp.url} into" in line and f"{inp.name}.git" in line
    assert not dirs.packages.exists() and not dirs.sources.exists()


def test_download_failures_are_listed_with_their_reason(
    server: LoopbackServer, upstream: UpstreamRepo, dirs: InputDirs
) -> None:
    del server.files[f"/CANN/{PKG}"]
    plan = make_plan(server, UNREACHABLE_GIT)
    with pytest.raises(MissingInputs) as err:
        resolve_inputs(plan, dirs, download=True, offline=False, progress=False)
    missing = {m.name: m.how for m in err.value.missing}
    assert set(missing) == {PKG, "mindspeed@main"}
    assert "HTTP 404" in missing[PKG] and server.url(f"/CANN/{PKG}") in missing[PKG]
    assert f"mirror {UNREACHABLE_GIT}" in missing["mindspeed@main"]
    # what did arrive is kept and locked
    assert (dirs.wheelhouse / WHEEL).exists()
    assert WHEEL in yaml.safe_load((dirs.locks / "test.yaml").read_text())["files"]


def test_sources_dir_serves_an_air_gapped_host(server: LoopbackServer, upstream: UpstreamRepo, tmp_path: Path) -> None:
    airgap = tmp_path / "airgap"
    airgap.mkdir()
    upstream.git("clone", "--quiet", "--bare", str(upstream.path), str(airgap / "mindspeed.git"))
    dirs = InputDirs.under(tmp_path / "work", source_overrides=airgap)
    dirs.packages.mkdir(parents=True)
    (dirs.packages / PKG).write_bytes(PKG_BYTES)
    house = tmp_path / "usb-wheels"
    house.mkdir()
    (house / WHEEL).write_bytes(b"local wheel")
    dirs = InputDirs.under(tmp_path / "work", source_overrides=airgap, extra_wheelhouses=(house,))
    got = resolve_inputs(make_plan(server, UNREACHABLE_GIT), dirs, download=False, offline=True, progress=False)
    assert got["mindspeed", "mindspeed"].digest == upstream.git("rev-parse", "main")
    assert got["pta", "demo==1.0"].path == house / WHEEL  # the user's wheelhouse comes first
    assert server.requests == []


def test_fetch_reports_each_input(server: LoopbackServer, upstream: UpstreamRepo, dirs: InputDirs) -> None:
    out = io.StringIO()
    fetch(make_plan(server, upstream.url), dirs, progress=False, out=out)
    text = out.getvalue()
    assert f"fetched   {dirs.packages / PKG}" in text or f"fetched   work/packages/{PKG}" in text
    assert "recorded in" in text and "resolved  git mindspeed main ->" in text
    assert text.rstrip().splitlines()[-1].startswith("all inputs of ascend-llm-stack:test are local: 2 file(s)")
    out = io.StringIO()
    fetch(make_plan(server, upstream.url), dirs, progress=False, out=out)
    assert "verified" in out.getvalue() and "fetched" not in out.getvalue()
    assert "as locked in" in out.getvalue()


def test_place_copies_when_hard_links_fail(
    server: LoopbackServer, upstream: UpstreamRepo, dirs: InputDirs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = resolve_inputs(make_plan(server, upstream.url), dirs, download=True, offline=False, progress=False)

    def cross_device(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(inputs_mod.os, "link", cross_device)
    (placed,) = got.place("cann", tmp_path / "ctx")
    assert placed.read_bytes() == PKG_BYTES
    assert placed.stat().st_ino != (dirs.packages / PKG).stat().st_ino


# --------------------------------------------------------------------------------------------------------
# Huawei's published .zip and sha256 (ascend-deployer, published.yaml)

ZIP = PKG.replace(".run", ".zip")
ZIP_URL_PATH = f"/CANN/{ZIP}"


def zipped(run_bytes: bytes, name: str = PKG) -> bytes:
    """A .zip around the .run, as ascend-deployer's CANN_<ver>.json lists each package."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, run_bytes)
        zf.writestr(f"{name}.asc", b"signature stand-in")
    return buf.getvalue()


def zip_plan(server: LoopbackServer, git_url: str, published_sha: str) -> BuildPlan:
    plan = make_plan(server, git_url)
    cann = Input("package", PKG, url=server.url(f"/CANN/{PKG}"), referer=REFERER, archive=ZIP,
                 archive_url=server.url(ZIP_URL_PATH), archive_sha256=published_sha)  # fmt: skip
    plan.layers[0] = layer("cann", [cann])
    return plan


def test_fetch_takes_the_published_zip_verifies_it_and_unpacks_the_run(
    server: LoopbackServer, upstream: UpstreamRepo, dirs: InputDirs
) -> None:
    data = zipped(PKG_BYTES)
    server.files[ZIP_URL_PATH] = data
    got = resolve_inputs(zip_plan(server, upstream.url, sha(data)), dirs, download=True, offline=False, progress=False)
    assert ZIP_URL_PATH in downloads(server) and f"/CANN/{PKG}" not in downloads(server)
    run = dirs.packages / PKG
    assert got["cann", PKG].path == run and run.read_bytes() == PKG_BYTES and os.access(run, os.X_OK)
    assert any("verified" in e and "(published.yaml)" in e for e in got.events)
    lock = yaml.safe_load((dirs.locks / "test.yaml").read_text())["files"]
    assert lock[ZIP] == sha(data) and lock[PKG] == sha(PKG_BYTES)  # the .run's hash comes from a verified zip


def test_a_zip_whose_sha256_is_not_the_published_one_is_refused(
    server: LoopbackServer, upstream: UpstreamRepo, dirs: InputDirs
) -> None:
    real, tampered = zipped(PKG_BYTES), zipped(PKG_BYTES + b"\n# tampered")
    server.files[ZIP_URL_PATH] = tampered
    with pytest.raises(ChecksumMismatch) as err:
        resolve_inputs(zip_plan(server, upstream.url, sha(real)), dirs, download=True, offline=False, progress=False)
    message = str(err.value)
    assert ZIP in message and sha(real) in message and sha(tampered) in message and "(published.yaml)" in message
    assert "\n" not in message
    assert not (dirs.packages / PKG).exists() and not (dirs.packages / ZIP).exists()
    assert not part_path(dirs.packages / ZIP).exists()


def test_a_carried_zip_is_verified_and_unpacked_offline(
    server: LoopbackServer, upstream: UpstreamRepo, dirs: InputDirs
) -> None:
    data = zipped(PKG_BYTES)
    dirs.packages.mkdir(parents=True)
    (dirs.packages / ZIP).write_bytes(data)
    plan = zip_plan(server, upstream.url, sha(data))
    plan.layers = plan.layers[:1]
    got = resolve_inputs(plan, dirs, download=False, offline=True, progress=False)
    assert got["cann", PKG].path.read_bytes() == PKG_BYTES and server.requests == []
    (dirs.packages / PKG).unlink()
    (dirs.packages / ZIP).write_bytes(zipped(b"someone else's installer"))
    with pytest.raises(ChecksumMismatch, match=r"\(published\.yaml\)"):
        resolve_inputs(plan, dirs, download=False, offline=True, progress=False)
    assert not (dirs.packages / PKG).exists()


def test_a_published_wheel_must_be_the_published_file(server: LoopbackServer, upstream: UpstreamRepo,
                                                      dirs: InputDirs) -> None:  # fmt: skip
    from ascend_stack.published import Published, PublishedFile

    pub = Published("ascend-deployer 26.0.0", {}, {WHEEL: PublishedFile(WHEEL, "https://x/" + WHEEL, sha(b"wheel"))})
    assert resolve_inputs(make_plan(server, upstream.url), dirs, download=True, offline=False, progress=False,
                          published=pub)["pta", "demo==1.0"].digest == sha(b"wheel")  # fmt: skip
    (dirs.wheelhouse / WHEEL).write_bytes(b"a rebuilt wheel of the same name")
    (dirs.locks / "test.yaml").unlink()
    with pytest.raises(ChecksumMismatch) as err:
        resolve_inputs(make_plan(server, upstream.url), dirs, download=False, offline=True, progress=False,
                       published=pub)  # fmt: skip
    assert "ascend-deployer 26.0.0 (published.yaml)" in str(err.value) and sha(b"wheel") in str(err.value)

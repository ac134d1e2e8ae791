"""OS package folders without a Docker engine: what the collection makes of apt's output, and how a
build finds, verifies, refuses and places a folder.

Stand-ins, generated here: the files the collection container leaves in its staging dir (apt's
``indextargets`` and ``--print-uris`` lines, an ``InRelease`` with its SHA256 section, an
``.xz`` Packages index, ``.deb`` files of random bytes), in the formats apt writes them. The
signature of ``InRelease`` is apt's business at build time and is not modelled. The real thing
runs in tests/test_build_offline_os.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
from dataclasses import replace
from pathlib import Path

import pytest

from ascend_stack import ospackages, render
from ascend_stack.baseimage import AptSource, parse_deb822_sources
from ascend_stack.download import ChecksumMismatch
from ascend_stack.inputs import InputDirs, MissingInputs, fetch, resolve_inputs
from ascend_stack.matrix import load_matrix
from ascend_stack.ospackages import Manifest, Request
from ascend_stack.render import BuildPlan
from ascend_stack.target import resolve

REPO = Path(__file__).resolve().parents[1]
IMAGE_ID = "sha256:" + "ab" * 32
FOLDER = "debian-bookworm-x86_64"
MAIN = "http://deb.debian.org/debian/"
SECURITY = "http://deb.debian.org/debian-security/"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def os_plan() -> BuildPlan:
    """The test row's plan with only its OS package inputs (base: one step, pta: `patch`)."""
    plan, _ = render.plan(resolve(load_matrix(REPO / "matrix.yaml"), "test", arch="x86_64"))
    layers = [replace(layer, inputs=[i for i in layer.inputs if i.kind == "os"]) for layer in plan.layers]
    return replace(plan, layers=[layer for layer in layers if layer.inputs])


def make_folder(dirs: InputDirs, plan: BuildPlan, *, layers: tuple[str, ...] = ("base", "pta")) -> Path:
    """A collected folder for ``layers``' steps: two fake .debs per step, an index file, the manifest."""
    folder = dirs.os_packages(FOLDER)
    steps, packages = {}, {}
    for layer in plan.layers:
        if layer.name not in layers:
            continue
        for step in layer.inputs[0].steps:
            paths = []
            for name in step[:2]:
                rel = f"deb.debian.org_debian/pool/main/{name[0]}/{name}/{name}_1.0-1_amd64.deb"
                data = f"deb {name}".encode() + os.urandom(64)
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                (folder / rel).write_bytes(data)
                packages[rel] = {"sha256": sha(data), "size": len(data), "package": name, "version": "1.0-1",
                                 "architecture": "amd64"}  # fmt: skip
                paths.append(rel)
            steps[ospackages.step_key(step)] = paths
    release = folder / "deb.debian.org_debian/dists/bookworm/InRelease"
    release.parent.mkdir(parents=True, exist_ok=True)
    release.write_text("Origin: Debian\n")
    index = {"deb.debian.org_debian/dists/bookworm/InRelease": {"sha256": sha(b"Origin: Debian\n"), "size": 15}}
    manifest = Manifest("debian-bookworm", "x86_64", "apt", "ascend-llm-stack/os:debian-bookworm-x86_64",
                        IMAGE_ID, None, steps, packages, index)  # fmt: skip
    (folder / ospackages.MANIFEST).write_text(manifest.to_json())
    return folder


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InputDirs:
    # The engine's answer for the base image: the one the folder was collected in.
    monkeypatch.setattr(ospackages, "image_id", lambda ref: IMAGE_ID)
    return InputDirs.under(tmp_path / "work")


@pytest.fixture
def no_collection(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("collect() must not run: the folder fits")

    monkeypatch.setattr(ospackages, "collect", refuse)


def test_a_fitting_folder_serves_both_layers_offline(dirs: InputDirs, tmp_path: Path) -> None:
    plan = os_plan()
    folder = make_folder(dirs, plan)
    got = resolve_inputs(plan, dirs, download=False, offline=True, progress=False)
    assert got.os_layers() == {"base", "pta"}
    base, pta = got["base", FOLDER], got["pta", FOLDER]
    assert base.path == folder and base.entry == f"os:{FOLDER}:sha256:{base.digest}"
    assert base.digest != pta.digest  # each layer's hash covers its own steps' packages
    assert any(e.startswith(f"verified  {folder}/ 3 OS packages") and "for base, pta" in e for e in got.events)
    # placed into a build context as hard links: the manifest and every file it lists, nothing else
    (folder / "stray.txt").write_text("not listed")
    placed = base.place(tmp_path / "ctx")
    assert placed == tmp_path / "ctx" / "os-packages"
    files = sorted(str(p.relative_to(placed)) for p in placed.rglob("*") if p.is_file())
    manifest = Manifest.load(folder)
    assert manifest is not None and files == sorted([ospackages.MANIFEST, *manifest.files()])
    deb = next(iter(manifest.packages))
    assert (placed / deb).stat().st_ino == (folder / deb).stat().st_ino


def test_a_tampered_deb_is_refused_naming_the_file_and_both_hashes(dirs: InputDirs) -> None:
    plan = os_plan()
    folder = make_folder(dirs, plan)
    manifest = Manifest.load(folder)
    assert manifest is not None
    rel, entry = sorted(manifest.packages.items())[-1]
    with (folder / rel).open("ab") as fh:
        fh.write(b"tampered")
    tampered = sha((folder / rel).read_bytes())
    with pytest.raises(ChecksumMismatch) as err:
        resolve_inputs(plan, dirs, download=False, offline=True, progress=False)
    message = str(err.value)
    assert str(folder / rel) in message and entry["sha256"] in message and tampered in message
    assert "manifest.json, from the archive's signed index" in message and "invoke fetch" in message
    assert "\n" not in message


def test_offline_without_the_folder_lists_it_with_what_to_run(dirs: InputDirs) -> None:
    plan = os_plan()
    with pytest.raises(MissingInputs) as err:
        resolve_inputs(plan, dirs, download=False, offline=True, progress=False)
    [missing] = err.value.missing
    assert (missing.kind, missing.name) == ("os", FOLDER)
    assert str(dirs.os_packages(FOLDER)) in missing.how and "invoke fetch --cann test" in missing.how
    assert "of base, pta" in missing.how


def test_a_folder_without_a_layers_step_serves_only_the_others(dirs: InputDirs) -> None:
    plan = os_plan()
    make_folder(dirs, plan, layers=("base",))
    with pytest.raises(MissingInputs) as err:  # offline: every step must come from the folder
        resolve_inputs(plan, dirs, download=False, offline=True, progress=False)
    assert "was collected without the pta step `patch`" in str(err.value)
    got = resolve_inputs(plan, dirs, download=True, offline=False, progress=False)  # online: pta uses the mirror
    assert got.os_layers() == {"base"}
    assert any(e.startswith("mirror ") and "pta install OS packages from the mirror" in e for e in got.events)
    _, files = render.plan(resolve(load_matrix(REPO / "matrix.yaml"), "test", arch="x86_64"), os_local=got.os_layers())
    assert "/mnt/os-packages" in files["base/Dockerfile"] and "/mnt/os-packages" not in files["pta/Dockerfile"]


def test_a_rebuilt_base_image_or_a_lost_file_makes_the_folder_unfit(
    dirs: InputDirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = os_plan()
    folder = make_folder(dirs, plan)
    monkeypatch.setattr(ospackages, "image_id", lambda ref: "sha256:" + "cd" * 32)
    with pytest.raises(MissingInputs) as err:
        resolve_inputs(plan, dirs, download=False, offline=True, progress=False)
    assert f"was collected in ascend-llm-stack/os:debian-bookworm-x86_64 {IMAGE_ID[:19]}" in str(err.value)
    assert "which is now sha256:cdcdcdcdcdcd" in str(err.value)
    monkeypatch.setattr(ospackages, "image_id", lambda ref: IMAGE_ID)
    manifest = Manifest.load(folder)
    assert manifest is not None
    (folder / next(iter(manifest.packages))).unlink()
    with pytest.raises(MissingInputs) as err:
        resolve_inputs(plan, dirs, download=False, offline=True, progress=False)
    assert "1 file(s) of" in str(err.value) and "are gone" in str(err.value)


def test_a_second_fetch_collects_nothing(dirs: InputDirs, no_collection: None) -> None:
    plan = os_plan()
    make_folder(dirs, plan)
    out = io.StringIO()
    fetch(plan, dirs, progress=False, out=out)
    assert "verified  " in out.getvalue() and "collected" not in out.getvalue()
    assert "1 OS package folder(s)" in out.getvalue()


def test_fetch_collects_what_does_not_fit_keeping_the_other_steps(
    dirs: InputDirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = os_plan()
    base_only = replace(plan, layers=[layer for layer in plan.layers if layer.name == "base"])
    folder = make_folder(dirs, plan, layers=("base",))
    old = Manifest.load(folder)
    asked: list[tuple[Request, Manifest | None]] = []

    def collect(req: Request, dest: Path, *, reuse: Manifest | None, report: object) -> Manifest:
        asked.append((req, reuse))
        assert dest == folder
        return make_folder_manifest(dirs, plan)

    def make_folder_manifest(dirs: InputDirs, plan: BuildPlan) -> Manifest:
        result = Manifest.load(make_folder(dirs, plan))
        assert result is not None
        return result

    monkeypatch.setattr(ospackages, "collect", collect)
    fetch(base_only, dirs, progress=False, out=io.StringIO())
    assert asked == []  # base's step is there
    fetch(plan, dirs, progress=False, out=io.StringIO(), apt_mirror="http://mirror.corp/debian")
    [(req, reuse)] = asked
    keys = [ospackages.step_key(s) for s in req.steps]
    assert keys == [ospackages.step_key(plan.layers[0].inputs[0].steps[0]), "patch"]
    assert reuse == old and req.mirror == "http://mirror.corp/debian" and req.platform == "linux/amd64"
    assert req.image == "ascend-llm-stack/os:debian-bookworm-x86_64" and req.family == "apt"


def test_the_layer_digest_covers_its_steps_packages_and_the_indexes(dirs: InputDirs) -> None:
    plan = os_plan()
    manifest = Manifest.load(make_folder(dirs, plan))
    assert manifest is not None
    base_steps, pta_steps = plan.layers[0].inputs[0].steps, plan.layers[1].inputs[0].steps
    base, pta = manifest.digest(base_steps), manifest.digest(pta_steps)
    patch = next(p for p in manifest.packages if "/patch/" in p)
    changed = replace(manifest, packages={**manifest.packages, patch: {**manifest.packages[patch], "sha256": "0" * 64}})
    assert changed.digest(base_steps) == base and changed.digest(pta_steps) != pta
    index = {key: {"sha256": "1" * 64, "size": 1} for key in manifest.index}
    assert replace(manifest, index=index).digest(base_steps) != base
    assert json.loads(manifest.to_json())["schema"] == 1 and Manifest.load(dirs.os_packages(FOLDER)) == manifest


def test_a_broken_manifest_is_one_line(dirs: InputDirs) -> None:
    folder = make_folder(dirs, os_plan())
    (folder / ospackages.MANIFEST).write_text("{not json")
    with pytest.raises(ospackages.UserError) as err:
        resolve_inputs(os_plan(), dirs, download=False, offline=True, progress=False)
    assert "manifest.json: not readable JSON" in str(err.value) and "\n" not in str(err.value)


def test_package_names_are_checked_before_they_reach_a_script() -> None:
    with pytest.raises(ospackages.UserError, match="'gcc; rm -rf /' is not an OS package name"):
        Request("debian-bookworm", "x86_64", "apt", "img", "linux/amd64", (("gcc; rm -rf /",),))
    Request("openeuler22.03", "aarch64", "dnf", "img", "linux/arm64", (("/usr/sbin/useradd", "gcc-c++"),))


# --------------------------------------------------------------------------- what apt leaves behind

STANZAS = {
    "gcc": ("pool/main/g/gcc-defaults/gcc_12.2.0-3_amd64.deb", "4:12.2.0-3", MAIN, "bookworm"),
    "libssl3": ("pool/updates/main/o/openssl/libssl3_3.0.17-1~deb12u2_amd64.deb", "3.0.17-1~deb12u2", SECURITY,
                "bookworm-security"),
}  # fmt: skip
DEBS = {name: f"deb {name}".encode() + os.urandom(256) for name in STANZAS}


def lists_name(repo: str, suite: str, rest: str) -> str:
    return f"{repo.split('://')[1].rstrip('/').replace('/', '_')}_dists_{suite}_{rest}"


def fake_staging(staging: Path, *, bad_deb: bool = False, repacked: bool = False) -> None:
    """The staging dir as the apt collection script leaves it, for one step installing gcc and libssl3."""
    lists, used, archives = staging / "lists", staging / "lists-used", staging / "archives"
    for d in (lists, used, archives, staging / "etc-apt/sources.list.d"):
        d.mkdir(parents=True)
    targets, uris = [], []
    for repo, suite in ((MAIN, "bookworm"), (MAIN, "bookworm-updates"), (SECURITY, "bookworm-security")):
        stanzas = "".join(
            f"Package: {name}\nVersion: {version}\nArchitecture: amd64\nDescription: x\n continued\n"
            f"Filename: {path}\nSize: {len(DEBS[name])}\nSHA256: {sha(DEBS[name])}\n\n"
            for name, (path, version, r, s) in STANZAS.items()
            if (r, s) == (repo, suite)
        ).encode()
        packed = lzma.compress(stanzas)
        signed = sha(b"repacked" if repacked else packed)
        release = (
            f"Origin: Debian\nSuite: {suite}\nSHA256:\n {sha(stanzas)} {len(stanzas)} main/binary-amd64/Packages\n"
            f" {signed} {len(packed)} main/binary-amd64/Packages.xz\nSHA512:\n 00 1 main/binary-amd64/Packages.xz\n"
        )
        for d in (lists, used):
            (d / lists_name(repo, suite, "InRelease")).write_text(release)
        index = lists / lists_name(repo, suite, "main_binary-amd64_Packages.xz")
        index.write_bytes(packed)
        targets.append(f"{repo}\t{suite}\tmain/binary-amd64/Packages\t/out/lists/{index.name}\tPackages")
        targets.append(f"{repo}\t{suite}\tmain/i18n/Translation-en\t/out/lists/x_Translation-en\tTranslations")
    for name, (path, version, repo, _) in STANZAS.items():
        archive_file = f"{name}_{version.replace(':', '%3a')}_amd64.deb"
        uris.append(f"'{repo}{path.replace('~', '%7e')}' {archive_file} {len(DEBS[name])} MD5Sum:00")
        (archives / archive_file).write_bytes(DEBS[name] + (b"x" if bad_deb else b""))
    (staging / "targets.tsv").write_text("\n".join(targets) + "\n")
    (staging / "step-0.uris").write_text("\n".join(uris) + "\n")
    (staging / "etc-apt/sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )


REQ = Request("debian-bookworm", "x86_64", "apt", "ascend-llm-stack/os:debian-bookworm-x86_64", "linux/amd64",
              (("gcc", "libssl3"),))  # fmt: skip


def test_apt_output_becomes_a_partial_mirror_with_debians_indexes(tmp_path: Path) -> None:
    staging, tree = tmp_path / "staging", tmp_path / "tree"
    fake_staging(staging)
    manifest = ospackages._assemble_apt(REQ, staging, tree)
    gcc = "deb.debian.org_debian/pool/main/g/gcc-defaults/gcc_12.2.0-3_amd64.deb"
    ssl = "deb.debian.org_debian-security/pool/updates/main/o/openssl/libssl3_3.0.17-1~deb12u2_amd64.deb"
    assert manifest.steps == {"gcc libssl3": [gcc, ssl]}
    assert manifest.packages[gcc] == {"sha256": sha(DEBS["gcc"]), "size": len(DEBS["gcc"]), "package": "gcc",
                                      "version": "4:12.2.0-3", "architecture": "amd64"}  # fmt: skip
    assert (tree / ssl).read_bytes() == DEBS["libssl3"]
    assert ospackages.archive_name(manifest.packages[gcc]) == "gcc_4%3a12.2.0-3_amd64.deb"
    # the indexes exactly as the mirror served them, at the paths apt asks a file: source for
    for suite in ("bookworm", "bookworm-updates"):
        assert f"deb.debian.org_debian/dists/{suite}/InRelease" in manifest.index
        assert f"deb.debian.org_debian/dists/{suite}/main/binary-amd64/Packages.xz" in manifest.index
    assert "deb.debian.org_debian-security/dists/bookworm-security/main/binary-amd64/Packages.xz" in manifest.index
    # the image's sources, pointed at the mounted folder, keyring kept: apt checks Debian's signature
    sources = parse_deb822_sources((tree / ospackages.APT_SOURCES).read_text())
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert sources == [
        AptSource("file:/mnt/os-packages/deb.debian.org_debian", ("bookworm", "bookworm-updates"), ("main",),
                  signed_by=keyring),
        AptSource("file:/mnt/os-packages/deb.debian.org_debian-security", ("bookworm-security",), ("main",),
                  signed_by=keyring),
    ]  # fmt: skip
    assert manifest.index[ospackages.APT_SOURCES]["sha256"] == sha((tree / ospackages.APT_SOURCES).read_bytes())


def test_a_deb_that_is_not_the_indexed_one_is_refused(tmp_path: Path) -> None:
    fake_staging(tmp_path / "staging", bad_deb=True)
    with pytest.raises(ospackages.UserError, match=r"gcc_4%3a12.2.0-3_amd64.deb: sha256 \w+ is not the index's"):
        ospackages._assemble_apt(REQ, tmp_path / "staging", tmp_path / "tree")


def test_an_index_apt_repacked_is_kept_uncompressed_when_that_is_signed(tmp_path: Path) -> None:
    fake_staging(tmp_path / "staging", repacked=True)
    manifest = ospackages._assemble_apt(REQ, tmp_path / "staging", tmp_path / "tree")
    plain = tmp_path / "tree/deb.debian.org_debian/dists/bookworm/main/binary-amd64/Packages"
    assert plain.is_file() and "deb.debian.org_debian/dists/bookworm/main/binary-amd64/Packages" in manifest.index
    assert not plain.with_suffix(".xz").exists()


def test_a_mirror_that_moved_during_collection_is_refused(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    fake_staging(staging)
    (staging / "lists-used" / lists_name(MAIN, "bookworm", "InRelease")).write_text("Origin: Debian\nDate: older\n")
    with pytest.raises(ospackages.UserError, match="bookworm changed while the packages were collected"):
        ospackages._assemble_apt(REQ, staging, tmp_path / "tree")


def test_collection_container_gets_the_ca_the_mirror_and_the_hosts_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("https_proxy", "http://proxy.corp:3128")
    ca = tmp_path / "ca.crt"
    ca.write_text("CA")
    req = replace(REQ, mirror="http://mirror.corp/debian", ca_cert=ca)
    argv = ospackages.container_argv(req, tmp_path / "staging", "docker")
    assert argv[:8] == ["docker", "run", "--rm", "--network", "host", "--platform", "linux/amd64", "-v"]
    assert f"{ca}:/run/ca.crt:ro" in argv and "MIRROR=http://mirror.corp/debian" in argv
    assert "https_proxy=http://proxy.corp:3128" in argv and f"HOST_UID={os.getuid()}" in argv
    assert argv[-3:] == ["bash", "ascend-llm-stack/os:debian-bookworm-x86_64", "/out/collect.sh"]


def test_archive_folder_names_follow_the_uri() -> None:
    assert ospackages.archive_dir("http://deb.debian.org/debian/") == "deb.debian.org_debian"
    assert ospackages.archive_dir("https://u:pw@mirror.corp:8443/debian-sec") == "mirror.corp_8443_debian-sec"
    assert ospackages.parse_print_uris("'http://h/p/a_1_all.deb' a_1_all.deb 12 MD5Sum:00\nE: x\n") == [
        ("http://h/p/a_1_all.deb", "a_1_all.deb", 12)
    ]


# --------------------------------------------------------------------------- dnf (rendered, not run here)


def test_dnf_collection_makes_one_signed_repository(tmp_path: Path) -> None:
    """Written to the interface of `dnf install --downloadonly --downloaddir` and `createrepo_c`."""
    staging = tmp_path / "staging"
    (staging / "rpms/repodata").mkdir(parents=True)
    (staging / "rpm-gpg").mkdir()
    for name in ("gcc-10.3.1-1.oe2203.aarch64.rpm", "patch-2.7.6-1.oe2203.aarch64.rpm"):
        (staging / "rpms" / name).write_bytes(os.urandom(32))
    (staging / "rpms/repodata/repomd.xml").write_text("<repomd/>")
    (staging / "rpm-gpg/RPM-GPG-KEY-openEuler").write_text("KEY")
    (staging / "step-0.files").write_text("gcc-10.3.1-1.oe2203.aarch64.rpm\n")
    (staging / "step-1.files").write_text("patch-2.7.6-1.oe2203.aarch64.rpm\n")
    (staging / "gpgkeys.txt").write_text("file:///mnt/os-packages/rpm-gpg/RPM-GPG-KEY-openEuler\n")
    req = Request("openeuler22.03", "aarch64", "dnf", "openeuler/openeuler:22.03-lts", "linux/arm64",
                  (("gcc",), ("patch",)))  # fmt: skip
    manifest = ospackages._assemble_dnf(req, staging, tmp_path / "tree")
    assert manifest.steps == {"gcc": ["rpms/gcc-10.3.1-1.oe2203.aarch64.rpm"],
                              "patch": ["rpms/patch-2.7.6-1.oe2203.aarch64.rpm"]}  # fmt: skip
    assert set(manifest.index) == {"rpms/repodata/repomd.xml", "rpm-gpg/RPM-GPG-KEY-openEuler", ospackages.DNF_REPO}
    repo = (tmp_path / "tree" / ospackages.DNF_REPO).read_text()
    assert "baseurl=file:///mnt/os-packages/rpms\n" in repo and "gpgcheck=1\n" in repo
    assert "gpgkey=file:///mnt/os-packages/rpm-gpg/RPM-GPG-KEY-openEuler\n" in repo
    script = ospackages.DNF_SCRIPT
    assert "install --downloadonly --downloaddir=/tmp/dl $packages" in script
    assert "createrepo_c --quiet /out/rpms" in script

"""A CycloneDX SBOM of a built image, for the compliance tools of the clusters it runs on.

Made with the CycloneDX Python library (cyclonedx-python-lib) from what ``invoke manifest``
collects in a container of the image, plus hashes only the lock knows:

* Python packages of /opt/venv (``pkg:pypi``), with the sha256 of the file the lock recorded for
  that name and version; :func:`lock_package_hashes` gives them from ``locks/<row>.yaml`` (which
  today hashes the big wheels, torch and torch_npu) and, once it exists, from the full per-target
  lock ``locks/<row>/<target>.txt`` (pip's requirements format with ``--hash``);
* OS packages (``pkg:deb`` / ``pkg:rpm``, from dpkg or rpm);
* the CANN toolkit, kernels and NNAL with the version file each version was read from, and the
  sha256 of the installer the lock recorded;
* the git sources (MindSpeed, MindSpeed-LLM, Megatron-LM, apex) with the commit they were built from.

Reproducible: the same image gives the same document apart from ``metadata.timestamp``. The serial
number is derived from the image ID, every ``bom-ref`` from the component's identity, and the
library sorts components.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cyclonedx.model import ExternalReference, ExternalReferenceType, HashAlgorithm, HashType, Property, XsUri
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Commit, Component, ComponentType, Pedigree
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from .lock import Lock

PackageHashes = Mapping[tuple[str, str], Sequence[str]]
"""(canonical package name, version) -> sha256 hex digests of the files the lock accepts for it."""

PREFIX = "ascend-llm-stack"
_ARCH_TAGS = {"x86_64": ("x86_64", "amd64"), "aarch64": ("aarch64", "arm64")}
_HASH = re.compile(r"--hash[= ]sha256:([0-9a-f]{64})")
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;\\]+)")


def _for_arch(tags: Iterable[str], arch: str) -> bool:
    tags = list(tags)
    return any(t == "any" for t in tags) or any(a in t for t in tags for a in _ARCH_TAGS.get(arch, (arch,)))


def lock_package_hashes(lock: Lock | None, arch: str) -> dict[tuple[str, str], list[str]]:
    """The wheels the row's lock records (``files``: file name -> sha256), for ``arch``: today torch and
    torch_npu, whose file names carry their name and version."""
    out: dict[tuple[str, str], list[str]] = {}
    for name, sha in sorted((lock.files if lock else {}).items()):
        try:
            dist, version, _, tags = parse_wheel_filename(name)
        except InvalidWheelFilename:
            continue  # a CANN installer or a source tarball
        if _for_arch((t.platform for t in tags), arch):
            out.setdefault((str(dist), str(version)), []).append(sha)
    return out


def requirements_hashes(text: str) -> dict[tuple[str, str], list[str]]:
    """``name==version --hash=sha256:...`` lines of a pip requirements lock (continuation lines joined)."""
    out: dict[tuple[str, str], list[str]] = {}
    for line in text.replace("\\\n", " ").splitlines():
        m = _REQ.match(line.split("#", 1)[0])
        if m:
            out.setdefault((canonicalize_name(m.group(1)), m.group(2)), []).extend(_HASH.findall(line))
    return out


def full_lock_path(lock_dir: Path, row: str, target_key: str) -> Path:
    """Where the full per-target Python lock lives: ``locks/<row>/<target>.txt``."""
    return lock_dir / row / f"{target_key}.txt"


def package_hashes(lock: Lock | None, arch: str, full_lock: Path | None = None) -> dict[tuple[str, str], list[str]]:
    """Every hash the locks know, the full per-target lock (when there is one) first."""
    merged = requirements_hashes(full_lock.read_text(encoding="utf-8")) if full_lock and full_lock.is_file() else {}
    for key, shas in lock_package_hashes(lock, arch).items():
        merged[key] = list(dict.fromkeys([*merged.get(key, []), *shas]))
    return merged


def _hashes(shas: Iterable[str]) -> list[HashType]:
    return [HashType(alg=HashAlgorithm.SHA_256, content=sha) for sha in dict.fromkeys(shas)]


def _props(items: Mapping[str, object]) -> list[Property]:
    return [Property(name=f"{PREFIX}:{k}", value=str(v)) for k, v in items.items() if v not in (None, "")]


def _python(packages: Sequence[Mapping[str, Any]], hashes: PackageHashes) -> list[Component]:
    out = []
    for p in packages:
        name, version = canonicalize_name(p["name"]), str(p["version"])
        purl = PackageURL("pypi", name=name, version=version)
        out.append(
            Component(
                type=ComponentType.LIBRARY,
                name=name,
                version=version,
                purl=purl,
                bom_ref=purl.to_string(),
                hashes=_hashes(hashes.get((name, version), ())),
                properties=_props({"editable_project_location": p.get("editable_project_location")}),
            )
        )
    return out


def _os(osd: Mapping[str, Any]) -> list[Component]:
    distro = str(osd.get("id") or "unknown")
    kind = {"dpkg": "deb", "rpm": "rpm"}.get(osd.get("manager") or "", "generic")
    qualifier = f"{distro}-{osd['version_id']}" if osd.get("version_id") else distro
    out = []
    for p in osd.get("packages", []):
        purl = PackageURL(
            kind,
            namespace=distro,
            name=p["name"],
            version=p["version"],
            qualifiers={"arch": p["arch"], "distro": qualifier},
        )
        out.append(
            Component(
                type=ComponentType.LIBRARY, name=p["name"], version=p["version"], purl=purl, bom_ref=purl.to_string()
            )
        )
    return out


def _cann(cann: Mapping[str, Any], installers: Mapping[str, str], file_hashes: Mapping[str, str]) -> list[Component]:
    """Toolkit, kernels (one per chip) and NNAL: their version, the file it was read from, the installer's hash."""
    files = cann.get("version_files") or {}
    parts: list[tuple[str, str | None, dict[str, object]]] = [
        (
            "toolkit",
            cann.get("toolkit"),
            {
                "innerversion": cann.get("toolkit_innerversion"),
                **{f"version.cfg:{k}": v for k, v in sorted(cann.get("components", {}).items())},
            },
        ),
        *(  # the kernels package is the CANN release's (version.cfg opp_kernel); its own file has an inner version
            (
                f"kernels-{chip}",
                cann.get("components", {}).get("opp_kernel") or cann.get("toolkit"),
                {"innerversion": cann.get("kernels_version")},
            )
            for chip in cann.get("kernels", [])
        ),
        ("nnal", cann.get("nnal_atb"), {}),
    ]
    out = []
    for part, version, extra in parts:
        if not version:
            continue
        name = f"cann-{part}"
        installer = installers.get(part)
        props = {
            "version_file": files.get(part.split("-")[0]),
            "installer": installer,
            "stand_in": cann.get("stand_in"),
            **extra,
        }
        out.append(
            Component(
                type=ComponentType.LIBRARY,
                group="huawei-ascend",
                name=name,
                version=str(version),
                bom_ref=f"cann:{part}@{version}",
                purl=PackageURL("generic", "huawei-ascend", name, str(version)),
                hashes=_hashes([file_hashes[installer]] if installer in file_hashes else []),
                properties=_props(props),
            )
        )
    return out


def _sources(sources: Mapping[str, Mapping[str, Any]], urls: Mapping[str, str]) -> list[Component]:
    out = []
    for name, src in sorted(sources.items()):
        commit, ref = src.get("commit"), src.get("ref")
        if not commit:
            continue
        slug = name.replace("_", "-")
        url = urls.get(name)
        purl = PackageURL(
            "generic", name=slug, version=commit, qualifiers={"vcs_url": f"git+{url}@{commit}"} if url else None
        )
        out.append(
            Component(
                type=ComponentType.LIBRARY,
                name=slug,
                version=commit,
                bom_ref=f"git:{slug}@{commit}",
                purl=purl,
                pedigree=Pedigree(commits=[Commit(uid=commit, url=XsUri(url) if url else None)]),
                external_references=[ExternalReference(type=ExternalReferenceType.VCS, url=XsUri(url))] if url else [],
                properties=_props({"ref": ref, "release": src.get("release")}),
            )
        )
    return out


def build(
    data: Mapping[str, Any],
    hashes: PackageHashes,
    file_hashes: Mapping[str, str] | None = None,
    installers: Mapping[str, str] | None = None,
    source_urls: Mapping[str, str] | None = None,
) -> Bom:
    """The SBOM of the image ``data`` describes (:func:`ascend_stack.manifest.collect`'s result).

    ``hashes``: Python package hashes by (name, version); ``file_hashes``: the lock's files (installer
    name -> sha256); ``installers``: CANN part (toolkit, kernels-<chip>, nnal) -> installer file name;
    ``source_urls``: git source (mindspeed, mindspeed_llm, ...) -> repository URL.
    """
    img = data["image"]
    image_id = str(img["id"])
    digest = image_id.split(":", 1)[-1]
    tag = str(img["tag"])
    image = Component(
        type=ComponentType.CONTAINER,
        name=PREFIX,
        version=tag.rsplit(":", 1)[-1] if ":" in tag else tag,
        bom_ref=f"image:{image_id}",
        hashes=_hashes([digest]),
        purl=PackageURL("oci", name=PREFIX, version=f"sha256:{digest}", qualifiers={"tag": tag.rsplit(":", 1)[-1]}),
        properties=_props({"created": img.get("created"), "arch": img.get("arch")}),
    )
    osd = data["os"]
    system = Component(
        type=ComponentType.OPERATING_SYSTEM,
        name=str(osd.get("id") or "linux"),
        version=str(osd.get("version_id") or ""),
        bom_ref=f"os:{osd.get('name')}",
        description=osd.get("name"),
    )
    components = [
        system,
        *_os(osd),
        *_python(data["python"].get("packages", []), hashes),
        *_cann(data["cann"], installers or {}, file_hashes or {}),
        *_sources(data.get("sources", {}), source_urls or {}),
    ]
    bom = Bom(
        serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"{PREFIX}:sbom:{image_id}"),
        metadata=BomMetaData(component=image, properties=_props({"row": data["matrix_row"].get("row")})),
        components=components,
    )
    bom.register_dependency(image, components)
    return bom


def to_json(bom: Bom) -> str:
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"

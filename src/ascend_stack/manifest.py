"""``invoke manifest``: what a built image holds, computed from a running container of it.

Written as JSON (for tools), Markdown (for people) and a CycloneDX SBOM (for compliance tools,
:mod:`ascend_stack.sbom`): the OS packages (dpkg or rpm), the Python packages of /opt/venv, the CANN
toolkit / kernels / NNAL versions, the git commits of MindSpeed, MindSpeed-LLM and Megatron-LM (from
``stack.json``), the matrix row it came from and the image's labels. What the image holds is read
from the image, never from the matrix or the build plan; the SBOM adds the hashes the lock recorded
for those files, and the repository URLs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from . import __version__, paths, render, sbom
from .container import Container, inspect_image, running
from .errors import UserError
from .lock import LOCK_DIR
from .matrix import MatrixError, load_matrix
from .verify import (
    KERNEL_DIRS,
    NNAL_HOME,
    STACK_JSON,
    TOOLKIT_HOME,
    expected_from_labels,
    load_lock,
    parse_key_values,
    standin_reason,
    version_cfg_versions,
)

SCHEMA = 1
MATRIX = Path(__file__).resolve().parents[2] / "matrix.yaml"
_ROW_LABELS = ("row", "cann", "chip", "hdk-min", "os", "python", "arch", "torch", "torch-npu", "apex", "mindspeed",
               "mindspeed-llm", "megatron", "transformers", "layer")  # fmt: skip
_DPKG = "dpkg-query -W -f='${Package}\\t${Version}\\t${Architecture}\\n'"
_RPM = "rpm -qa --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\t%{ARCH}\\n'"


def _read(box: Container, path: str) -> str | None:
    out = box.exec(f"cat {path}")
    return out.stdout if out.returncode == 0 else None


def os_packages(box: Container) -> dict[str, Any]:
    for manager, command in (("dpkg", _DPKG), ("rpm", _RPM)):
        out = box.exec(f"command -v {manager} >/dev/null && {command}")
        if out.returncode == 0:
            rows = sorted(line.split("\t") for line in out.stdout.splitlines() if line.count("\t") == 2)
            return {"manager": manager, "packages": [{"name": n, "version": v, "arch": a} for n, v, a in rows]}
    return {"manager": None, "packages": []}


def cann_versions(box: Container, arch: str, layout: dict[str, Any] | None = None) -> dict[str, Any]:
    """What CANN the image holds, at the paths its stack.json records (the pre-8.5 ones otherwise)."""
    home = (layout or {}).get("home") or TOOLKIT_HOME
    nnal_home = (layout or {}).get("nnal_home") or NNAL_HOME
    files = {
        "toolkit": f"{home}/{arch}-linux/ascend_toolkit_install.info",
        "kernels": f"{home}/opp_kernel/version.info",
        "nnal": f"{nnal_home}/version.info",
    }
    info = _read(box, files["toolkit"])
    cfg = _read(box, f"{home}/version.cfg")
    nnal = _read(box, files["nnal"])
    kernels_info = _read(box, files["kernels"])
    kernels = box.exec(f"ls {home}/opp/built-in/op_impl/ai_core/tbe/kernel").stdout.split()
    chips = {d: chip for chip, d in KERNEL_DIRS.items()}
    toolkit = parse_key_values(info) if info else {}
    head = box.exec(f"head -c 200 {home}/lib64/libascendcl.so")
    return {
        "stand_in": standin_reason(head.stdout.encode(), "libascendcl.so") if head.returncode == 0 else None,
        "toolkit": toolkit.get("version"),
        "toolkit_innerversion": toolkit.get("innerversion"),
        "components": version_cfg_versions(cfg) if cfg else {},
        "kernels": sorted(chips.get(d, d) for d in kernels if d != "config"),
        "kernels_version": parse_key_values(kernels_info).get("Version") if kernels_info else None,
        "nnal_atb": parse_key_values(nnal, ":").get("Ascend-cann-atb") if nnal else None,
        "version_files": {
            k: v for k, v in files.items() if {"toolkit": info, "kernels": kernels_info, "nnal": nnal}[k]
        },
    }


def collect(image: str) -> dict[str, Any]:
    """Everything the manifest says, from ``docker image inspect`` and a container of ``image``."""
    info = inspect_image(image)
    if info is None:
        raise UserError(f"no image {image} here: build it with `invoke build --cann <row> ...` (see `invoke matrix`)")
    labels: dict[str, str] = dict((info.get("Config") or {}).get("Labels") or {})
    with running(image, ["--user", "root"]) as box:  # root reads every file, whoever the image runs as
        arch = box.output("uname -m").strip()
        release = parse_key_values(_read(box, "/etc/os-release") or "")
        stack_text = _read(box, STACK_JSON)
        stack = json.loads(stack_text) if stack_text else None
        freeze = box.exec("python -m pip freeze --all --disable-pip-version-check")
        listed = box.exec("python -m pip list --format=json --disable-pip-version-check")
        packages = json.loads(listed.stdout) if listed.returncode == 0 else []
        python = box.exec("python -c 'import platform; print(platform.python_version())'").stdout.strip()
        data = {
            "schema": SCHEMA,
            "generated_by": f"ascend-llm-stack {__version__}",
            "image": {"tag": image, "id": info.get("Id"), "created": info.get("Created"), "arch": arch},
            "matrix_row": {k: labels.get(f"{render.LABEL_PREFIX}.{k}") for k in _ROW_LABELS},
            "os": {
                "name": release.get("PRETTY_NAME"),
                "id": release.get("ID"),
                "version_id": release.get("VERSION_ID"),
                **os_packages(box),
            },
            "python": {
                "version": python,
                "pip_freeze": freeze.stdout.splitlines() if freeze.returncode == 0 else [],
                "packages": sorted(packages, key=lambda p: p["name"].lower()),
            },
            "cann": cann_versions(box, arch, (stack or {}).get("cann_layout")),
            "sources": {
                name: (stack or {}).get(name)
                for name in ("mindspeed", "mindspeed_llm", "megatron", "apex")
                if (stack or {}).get(name) is not None
            },
            "stack_json": stack,
            "labels": dict(sorted(labels.items())),
        }
    return data


def md_text(value: object) -> str:
    """Any value as Markdown text on one line: control characters escaped, no HTML, no table breaks."""
    text = paths.one_line("" if value is None else str(value))
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def md_code(value: object) -> str:
    """An inline code span that no backtick in ``value`` can end early."""
    text = paths.one_line(str(value))
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _table(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> list[str]:
    cell = md_text
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def to_markdown(data: dict[str, Any]) -> str:
    img, cann, py, osd = data["image"], data["cann"], data["python"], data["os"]
    row = {k: v for k, v in data["matrix_row"].items() if v is not None}
    created, arch = md_text(img["created"]), md_text(img["arch"])
    out = [f"# Manifest of {md_code(img['tag'])}", "", f"Image ID {md_code(img['id'])}, created {created}, {arch}.", ""]
    out += ["## Matrix row (labels)", "", *_table(("field", "value"), list(row.items())), ""]
    out += ["## CANN", ""]
    if cann.get("stand_in"):
        out += [f"**Not a real CANN**: {md_text(cann['stand_in'])}.", ""]
    out += _table(
        ("component", "version"),
        [("toolkit", cann["toolkit"]), ("toolkit inner version", cann["toolkit_innerversion"]),
         ("kernels", ", ".join(cann["kernels"]) or None), ("NNAL (ATB)", cann["nnal_atb"]),
         *((f"version.cfg {k}", v) for k, v in sorted(cann["components"].items()))],
    )  # fmt: skip
    out += ["", "## Sources", ""]
    out += _table(("source", "ref", "commit"), [(n, s.get("ref"), s.get("commit")) for n, s in data["sources"].items()])
    freeze = [paths.one_line(line) for line in py["pip_freeze"]]
    fence = "`" * max([3] + [len(run) + 1 for line in freeze for run in re.findall("`{3,}", line)])
    out += ["", f"## Python {md_text(py['version'])}: `pip freeze`", "", fence, *freeze, fence, ""]
    out += [f"## OS packages ({md_text(osd['name'])}, {md_text(osd['manager'])}: {len(osd['packages'])})", ""]
    out += _table(("package", "version", "arch"), [(p["name"], p["version"], p["arch"]) for p in osd["packages"]])
    out += ["", "## Labels", "", *_table(("label", "value"), list(data["labels"].items())), ""]
    return "\n".join(out)


def file_stem(image: str) -> str:
    """``ascend-llm-stack:test-910b-...`` -> ``test-910b-...``; other names with unsafe characters replaced."""
    name = image.split(":", 1)[1] if image.startswith(f"{render.IMAGE}:") else image
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def bill_of_materials(data: dict[str, Any], lock_dir: Path | None = None, matrix_path: Path = MATRIX) -> str:
    """The CycloneDX SBOM (JSON) of the image ``data`` describes, with the hashes of the row's lock."""
    row, arch = data["matrix_row"].get("row"), data["image"]["arch"]
    try:
        target = expected_from_labels(data["labels"], load_matrix(matrix_path)).target
    except (UserError, MatrixError):
        target = None  # not an image of this matrix: no installer names or source URLs to add
    lock = load_lock(row, lock_dir) if row else None
    full = sbom.full_lock_path(lock_dir or LOCK_DIR, row, render.target_key(target)) if target and row else None
    installers, urls = {}, {}
    if target is not None:
        files = render.cann_files(target)
        installers = {"toolkit": files["toolkit"], f"kernels-{target.chip}": files["kernels"], "nnal": files["nnal"]}
        src = target.matrix.sources
        urls = {"mindspeed": src.mindspeed, "mindspeed_llm": src.mindspeed_llm, "megatron": src.megatron,
                "apex": src.apex}  # fmt: skip
    bom = sbom.build(data, sbom.package_hashes(lock, arch, full), lock.files if lock else {}, installers, urls)
    return sbom.to_json(bom)


def write(
    image: str, out_dir: Path, lock_dir: Path | None = None, matrix_path: Path = MATRIX
) -> tuple[Path, Path, Path]:
    """Write ``<out_dir>/<tag>.json``, ``.md`` and the SBOM ``.cdx.json``; returns the three paths."""
    data = collect(image)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = file_stem(image)
    json_path, md_path, sbom_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.cdx.json"
    paths.write_text(json_path, json.dumps(data, indent=2) + "\n")
    paths.write_text(md_path, to_markdown(data))
    paths.write_text(sbom_path, bill_of_materials(data, lock_dir, matrix_path))
    return json_path, md_path, sbom_path

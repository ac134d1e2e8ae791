"""``invoke manifest``: what a built image holds, computed from a running container of it.

Written as JSON (for tools) and Markdown (for people): the OS packages (dpkg or rpm), ``pip freeze``
of /opt/venv, the CANN toolkit / kernels / NNAL versions, the git commits of MindSpeed,
MindSpeed-LLM and Megatron-LM (from ``stack.json``), the matrix row it came from and the image's
labels. Nothing is taken from the matrix or the build plan: a manifest says what *is* in the image.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from . import __version__, paths, render
from .container import Container, inspect_image, running
from .errors import UserError
from .verify import (
    KERNEL_DIRS,
    NNAL_HOME,
    STACK_JSON,
    TOOLKIT_HOME,
    parse_key_values,
    standin_reason,
    version_cfg_versions,
)

SCHEMA = 1
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


def cann_versions(box: Container, arch: str) -> dict[str, Any]:
    info = _read(box, f"{TOOLKIT_HOME}/{arch}-linux/ascend_toolkit_install.info")
    cfg = _read(box, f"{TOOLKIT_HOME}/version.cfg")
    nnal = _read(box, f"{NNAL_HOME}/version.info")
    kernels = box.exec(f"ls {TOOLKIT_HOME}/opp/built-in/op_impl/ai_core/tbe/kernel").stdout.split()
    chips = {d: chip for chip, d in KERNEL_DIRS.items()}
    toolkit = parse_key_values(info) if info else {}
    head = box.exec(f"head -c 200 {TOOLKIT_HOME}/lib64/libascendcl.so")
    return {
        "stand_in": standin_reason(head.stdout.encode(), "libascendcl.so") if head.returncode == 0 else None,
        "toolkit": toolkit.get("version"),
        "toolkit_innerversion": toolkit.get("innerversion"),
        "components": version_cfg_versions(cfg) if cfg else {},
        "kernels": sorted(chips.get(d, d) for d in kernels if d != "config"),
        "nnal_atb": parse_key_values(nnal, ":").get("Ascend-cann-atb") if nnal else None,
    }


def collect(image: str) -> dict[str, Any]:
    """Everything the manifest says, from ``docker image inspect`` and a container of ``image``."""
    info = inspect_image(image)
    if info is None:
        raise UserError(f"no image {image} here: build it with `invoke build --cann <row> ...` (see `invoke matrix`)")
    labels: dict[str, str] = dict((info.get("Config") or {}).get("Labels") or {})
    with running(image) as box:
        arch = box.output("uname -m").strip()
        release = parse_key_values(_read(box, "/etc/os-release") or "")
        stack_text = _read(box, STACK_JSON)
        stack = json.loads(stack_text) if stack_text else None
        freeze = box.exec("python -m pip freeze --all --disable-pip-version-check")
        python = box.exec("python -c 'import platform; print(platform.python_version())'").stdout.strip()
        data = {
            "schema": SCHEMA,
            "generated_by": f"ascend-llm-stack {__version__}",
            "image": {"tag": image, "id": info.get("Id"), "created": info.get("Created"), "arch": arch},
            "matrix_row": {k: labels.get(f"{render.LABEL_PREFIX}.{k}") for k in _ROW_LABELS},
            "os": {"name": release.get("PRETTY_NAME"), **os_packages(box)},
            "python": {"version": python, "pip_freeze": freeze.stdout.splitlines() if freeze.returncode == 0 else []},
            "cann": cann_versions(box, arch),
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


def write(image: str, out_dir: Path) -> tuple[Path, Path]:
    """Write ``<out_dir>/<tag>.json`` and ``.md``; returns both paths."""
    data = collect(image)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = file_stem(image)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    paths.write_text(json_path, json.dumps(data, indent=2) + "\n")
    paths.write_text(md_path, to_markdown(data))
    return json_path, md_path

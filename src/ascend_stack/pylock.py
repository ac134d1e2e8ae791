"""The full Python lock of a target: every package any layer installs, pinned with its sha256 hashes.

Why: the matrix pins torch, torch_npu and a few more; everything else (about a hundred packages:
MindSpeed's and MindSpeed-LLM's requirements, CANN's Python packages, tensorboard) used to be resolved
by pip at build time, so two builds a week apart could differ and an air-gapped host could not know
what to carry. ``invoke lock`` resolves them once, for the *target's* Python, architecture and glibc
(not the host's: uv's ``pip compile --python-platform``), into ``locks/<row>/<target>.txt``, which is
committed; every pip step of the images then installs its layer's section with ``--require-hashes``,
so a build that would install anything not in the lock fails.

The file is requirements format, one section per layer (``# --- base (inputs sha256:...) ---``): a
layer's section holds the packages new in that layer. The layers above base are resolved as one
environment (so no later layer moves what an earlier one installed) and split by what each layer's
requirements pull in; the base layer alone (rows share it); apex's builder stage on its own.

Requirements come from the matrix (CANN's Python packages, torch/torch_npu, the row's pins as
constraints), the pinned source trees (MindSpeed's and MindSpeed-LLM's requirements.txt at their
commits) and entrypoints/pyproject.toml. What the guide installs last wins: the row's transformers pin
and the row's ``lock_overrides`` replace earlier requirements of the same package. Each section keeps
a digest of its inputs; a section whose digest differs is stale and is resolved again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .target import Target

REPO = Path(__file__).resolve().parents[2]
LOCK_ROOT = REPO / "locks"
PYPI = "https://pypi.org/simple"
SCHEMA = 1
_SECTION = re.compile(r"^# --- (?P<name>[a-z-]+) \(inputs (?P<digest>sha256:[0-9a-f]{64})\) ---$")
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(?P<version>\S+?)(\s*\\)?\s*$")
# Apex's builder stage is an environment of its own (the pta layer plus the build tools it needs).
APEX_BUILD = ("setuptools<=65.7.0", "wheel")


@dataclass(frozen=True)
class Section:
    """What one layer (or builder stage) adds: its requirements; ``after`` is the section it extends."""

    name: str
    requirements: tuple[str, ...]
    after: str | None


def lock_path(t: Target, root: Path = LOCK_ROOT) -> Path:
    """``locks/<row>/<os>-torch<ver>-py<python>-<arch>.txt``: Python packages do not depend on the chip."""
    return root / t.row.key / f"{t.os_name}-torch{t.torch}-py{t.python}-{t.arch}.txt"


def lock_command(t: Target) -> str:
    return f"invoke lock --cann {t.row.key} --torch {t.torch} --arch {t.arch} --os {t.os_name}"


def _requirement_lines(text: str, where: str) -> list[str]:
    """A requirements.txt's requirements (comments and blanks dropped); includes and editables refused."""
    out = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise UserError(f"{where}: `{line}` (an option line) cannot be locked; only plain requirements can")
        out.append(line)
    return out


def runtime_requirements() -> list[str]:
    """What the runtime layer's ``ascend-llm[image]`` needs: its dependencies and the ``image`` extra."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    project = tomllib.loads((REPO / "entrypoints" / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [*project["dependencies"], *project.get("optional-dependencies", {}).get("image", [])]


def sections(
    t: Target, read_source: Callable[[str, str], str] | None, layers: Sequence[str] | None = None
) -> list[Section]:
    """The target's sections in install order, for ``layers`` (default: all).

    ``read_source(name, path)`` reads a file of a pinned source at its commit; the mindspeed and
    runtime sections need it (MindSpeed's and MindSpeed-LLM's requirements.txt).
    """
    wanted = set(layers or ("base", "cann", "pta", "mindspeed", "runtime"))
    out = [Section("base", tuple(t.matrix.cann_packages.python_deps), None)]
    if "pta" in wanted or "mindspeed" in wanted or "runtime" in wanted:
        out.append(Section("pta", (f"torch=={t.torch}", f"torch_npu=={t.torch_npu}"), "base"))
        if t.row.apex:
            out.append(Section("apex-build", APEX_BUILD, "pta"))
    if "mindspeed" in wanted or "runtime" in wanted:
        if read_source is None:
            raise UserError("the mindspeed layer's lock needs the MindSpeed and MindSpeed-LLM sources")
        mindspeed = _requirement_lines(read_source("mindspeed", "requirements.txt"), "MindSpeed requirements.txt")
        llm = _requirement_lines(read_source("mindspeed-llm", "requirements.txt"), "MindSpeed-LLM requirements.txt")
        out.append(Section("mindspeed", (*mindspeed, *llm, f"transformers=={t.row.transformers}"), "pta"))
    if "mindspeed" in wanted or "runtime" in wanted:  # the mindspeed layer installs both, before the sources
        out.append(Section("runtime", tuple(runtime_requirements()), "mindspeed"))
    return out


def overrides(t: Target, section: Section) -> list[str]:
    """Requirements that replace every other requirement of the same package (installed last upstream)."""
    if section.name == "apex-build":
        return ["setuptools==65.7.0"]  # the builder stage's own pin; the image keeps the row's setuptools
    if section.name in ("mindspeed", "runtime"):
        return [f"transformers=={t.row.transformers}", *t.row.lock_overrides]
    return []


def platform_tag(t: Target) -> str:
    """uv's ``--python-platform``: the target's architecture and glibc (matrix.yaml oses.*.glibc)."""
    major, minor = t.os.glibc_version
    return f"{t.arch}-manylinux_{major}_{minor}"


def section_digests(t: Target, secs: Sequence[Section]) -> dict[str, str]:
    """Each section's inputs digest: its requirements, overrides and constraints, the target's Python and
    platform, and the digest of the section it extends (a change below makes the sections above stale)."""
    from .render import row_pins

    out: dict[str, str] = {}
    for sec in secs:
        data = {
            "schema": SCHEMA,
            "python": t.python,
            "platform": platform_tag(t),
            "torch_index": t.torch_index if sec.name != "base" else None,
            "constraints": row_pins(t) if sec.name != "base" else [],
            "requirements": list(sec.requirements),
            "overrides": overrides(t, sec),
            "after": out.get(sec.after) if sec.after else None,
        }
        out[sec.name] = "sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return out


@dataclass
class PyLock:
    """A parsed lock: each section's inputs digest and its requirements text."""

    path: Path
    digests: dict[str, str]
    sections: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> PyLock | None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        current, parts, digests = None, {}, {}
        for line in text.splitlines():
            if m := _SECTION.match(line):
                current = m.group("name")
                parts[current], digests[current] = [], m.group("digest")
            elif current is not None:
                parts[current].append(line)
        if not parts:
            raise UserError(f"{path}: not a lock written by `invoke lock` (no sections); lock it again")
        return cls(path, digests, {k: "\n".join(v).strip() + "\n" for k, v in parts.items()})

    def pins(self, name: str) -> dict[str, str]:
        """``{package: version}`` of a section."""
        return pins_of(self.sections.get(name, ""))

    def count(self) -> int:
        return sum(len(self.pins(n)) for n in self.sections)


def stale(t: Target, lock: PyLock | None, secs: Sequence[Section]) -> list[str]:
    """The sections of ``secs`` that ``lock`` lacks or holds for other inputs."""
    want = section_digests(t, secs)
    have = lock.digests if lock else {}
    return [name for name, digest in want.items() if have.get(name) != digest]


def pins_of(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if m := _PIN.match(line):
            out[canonical(m.group("name"))] = m.group("version")
    return out


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _blocks(text: str) -> dict[str, str]:
    """uv's output as ``{package: its lines}`` (the pin, its hashes and ``# via`` comments)."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if m := _PIN.match(line):
            current = canonical(m.group("name"))
            blocks[current] = [line]
        elif current is not None and line.startswith(("    ", "\t")):
            blocks[current].append(line)
    return {k: "\n".join(v) for k, v in blocks.items()}


def uv_binary() -> str:
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found]
    except ImportError:
        raise UserError("uv is not installed: pip install -e . (invoke lock resolves with uv)") from None
    return str(find_uv_bin())


def _uv_env(ca_cert: Path | None) -> dict[str, str]:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1"}
    if ca_cert:
        env["SSL_CERT_FILE"] = str(ca_cert)
    elif "SSL_CERT_FILE" not in env and Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        env["UV_NATIVE_TLS"] = "1"  # the system's CAs, as pip and git use them (a proxy's CA among them)
    return env


def _blocks_and_via(text: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """uv's output: each package's lines, and what required it (``-r <section>.in`` or a package name)."""
    blocks = _blocks(text)
    via: dict[str, set[str]] = {name: set() for name in blocks}
    current, in_via = None, False
    for line in text.splitlines():
        if m := _PIN.match(line):
            current, in_via = canonical(m.group("name")), False
            continue
        stripped = line.strip()
        if current is None or not stripped.startswith("#"):
            continue
        body = stripped.lstrip("#").strip()
        if body.startswith("via"):
            in_via = True
            body = body[3:].strip()
        if in_via and body:
            via[current].add(body if body.startswith("-") else canonical(body))
    return blocks, via


class _Resolver:
    """One ``uv pip compile`` call: requirements, constraints, overrides, preferences -> blocks and edges."""

    def __init__(self, t: Target, work: Path, find_links: Sequence[Path], index_url: str | None,
                 ca_cert: Path | None, report: Callable[[str], None]) -> None:  # fmt: skip
        self.t, self.work, self.find_links, self.index_url = t, work, find_links, index_url
        self.ca_cert, self.report = ca_cert, report

    def __call__(
        self, name: str, inputs: dict[str, Sequence[str]], constraints: Sequence[str], over: Sequence[str],
        prefer: str, extra_index: bool,
    ) -> tuple[dict[str, str], dict[str, set[str]]]:  # fmt: skip
        top = self.work / f"{name}.in"
        for part, reqs in inputs.items():
            (self.work / f"{part}.in").write_text("\n".join(reqs) + "\n")
        top.write_text("".join(f"-r {part}.in\n" for part in inputs) if len(inputs) > 1 or name not in inputs
                       else "\n".join(inputs[name]) + "\n")  # fmt: skip
        (self.work / f"{name}.constraints").write_text("\n".join(constraints) + "\n")
        (self.work / f"{name}.overrides").write_text("\n".join(over) + "\n")
        out = self.work / f"{name}.txt"
        out.write_text(prefer)  # uv keeps these versions where they still fit
        t = self.t
        argv = [uv_binary(), "pip", "compile", str(top), "--constraint", str(self.work / f"{name}.constraints"),
                "--override", str(self.work / f"{name}.overrides"), "--python-version", t.python,
                "--python-platform", platform_tag(t), "--generate-hashes", "--no-header", "--quiet",
                "--index-url", self.index_url or PYPI, "--output-file", str(out)]  # fmt: skip
        if extra_index and t.torch_index:
            argv += ["--extra-index-url", t.torch_index]
        for folder in self.find_links:
            if folder.is_dir():
                argv += ["--find-links", str(folder)]
        self.report(f"locking  {name}: {sum(len(r) for r in inputs.values())} requirement(s), "
                    f"Python {t.python}, {platform_tag(t)}")  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, env=_uv_env(self.ca_cert), cwd=self.work)
        if proc.returncode != 0:
            lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip() and "warning:" not in ln]
            raise UserError(f"cannot lock {name} of {t.row.key}: {' '.join(lines[-3:]) or 'uv failed'}")
        return _blocks_and_via(out.read_text())


def _closure(seeds: set[str], via: dict[str, set[str]]) -> set[str]:
    """Packages required, directly or not, by ``seeds`` (``-r x.in`` markers or package names)."""
    found: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, parents in via.items():
            if name not in found and parents & (seeds | found):
                found.add(name)
                changed = True
    return found


def compile_lock(
    t: Target,
    secs: Sequence[Section],
    *,
    previous: PyLock | None,
    update: bool = False,
    find_links: Sequence[Path] = (),
    index_url: str | None = None,
    ca_cert: Path | None = None,
    report: Callable[[str], None] = lambda _: None,
) -> str:
    """The lock file's text. The base section is resolved alone (the base layer is shared by rows); the
    image's other layers together, as one environment (so no later layer moves what an earlier one
    installed), then split by what each layer's requirements pull in; apex's builder stage on its own.
    Fresh sections (inputs unchanged) are kept; ``update`` resolves everything afresh."""
    from .render import row_pins

    constraints = row_pins(t)
    digests = section_digests(t, secs)
    todo = set(stale(t, None if update else previous, secs))
    by_name = {s.name: s for s in secs}
    texts: dict[str, str] = {n: previous.sections[n] for n in by_name if n not in todo and previous}
    keep = "" if update or previous is None else previous.sections

    def prefer(*names: str) -> str:
        return "".join(keep.get(n, "") for n in names) if keep else ""  # type: ignore[union-attr]

    with tempfile.TemporaryDirectory(prefix="ascend-lock-") as tmp:
        resolve = _Resolver(t, Path(tmp), find_links, index_url, ca_cert, report)
        if "base" in todo:
            blocks, _ = resolve("base", {"base": by_name["base"].requirements}, [], [], prefer("base"), False)
            texts["base"] = _text(blocks)
        base_pins = pins_of(texts["base"])
        group = [s.name for s in secs if s.name in ("pta", "mindspeed", "runtime")]
        if set(group) & todo:
            todo |= set(group) | ({"apex-build"} & set(by_name))
            over = list(dict.fromkeys(o for n in group for o in overrides(t, by_name[n])))
            pinned = [f"{k}=={v}" for k, v in base_pins.items()]
            blocks, via = resolve("image", {n: by_name[n].requirements for n in group}, [*constraints, *pinned],
                                  over, prefer(*group), True)  # fmt: skip
            done: set[str] = set(base_pins)
            for name in group:
                mine = _closure({f"-r {n}.in" for n in group[: group.index(name) + 1]}, via) - done
                texts[name] = _text({k: v for k, v in blocks.items() if k in mine})
                done |= mine
        if "apex-build" in todo:
            env = {**base_pins, **pins_of(texts["pta"])}
            sec = by_name["apex-build"]
            gone = {canonical(re.split(r"[<>=!~ ;\[]", o, maxsplit=1)[0]) for o in overrides(t, sec)}
            pinned = [f"{k}=={v}" for k, v in env.items() if k not in gone]
            blocks, _ = resolve("apex-build", {"apex-build": sec.requirements}, [*constraints, *pinned],
                                overrides(t, sec), prefer("apex-build"), True)  # fmt: skip
            texts["apex-build"] = _text({k: v for k, v in blocks.items() if k not in env or k in gone})
    if previous:  # sections this call did not look at (e.g. mindspeed, for a build --until pta)
        for name, text in previous.sections.items():
            if name not in texts:
                texts[name], digests[name] = text, previous.digests[name]
    order = [s.name for s in secs] + [n for n in texts if n not in by_name]
    return _render(t, order, digests, texts)


def _text(blocks: dict[str, str]) -> str:
    return "\n".join(blocks[n] for n in sorted(blocks)) + "\n" if blocks else ""


def _chain(secs: Sequence[Section], sec: Section) -> list[Section]:
    """``sec`` and the sections it extends, oldest first."""
    by_name = {s.name: s for s in secs}
    chain = [sec]
    while chain[-1].after:
        chain.append(by_name[chain[-1].after])
    return chain[::-1]


def _render(t: Target, order: Sequence[str], digests: dict[str, str], texts: dict[str, str]) -> str:
    count = sum(len(pins_of(texts[n])) for n in order)
    lines = [
        f"# Generated by `{lock_command(t)}`; commit this file. Do not edit by hand.",
        f"# Every Python package the image of matrix row {t.row.key} installs ({count}), for Python {t.python} on",
        f"# {platform_tag(t)}, with the sha256 of each file. One section per layer: the packages new in it (the",
        "# image's layers are resolved as one environment); each layer installs its section with --require-hashes.",
        "# A section whose inputs changed (the row's pins, a source's requirements) is stale: builds re-lock it.",
    ]
    for name in order:
        lines += ["", f"# --- {name} (inputs {digests[name]}) ---"]
        if texts[name].strip():
            lines.append(texts[name].rstrip("\n"))
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> bool:
    """Write the lock if it changed; returns whether it wrote."""
    from .paths import write_text

    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    write_text(path, text)
    return True


def source_reader(resolved: object) -> Callable[[str, str], str] | None:
    """``read_source`` over the git sources of a :class:`~ascend_stack.inputs.ResolvedInputs` (None if absent)."""
    gits = {r.name: r for r in resolved if r.kind == "git"}  # type: ignore[attr-defined]
    if not {"mindspeed", "mindspeed-llm"} <= set(gits):
        return None

    def read(name: str, path: str) -> str:
        r = gits[name]
        out = subprocess.run(["git", "-C", str(r.path), "show", f"{r.digest}:{path}"], capture_output=True, text=True)
        if out.returncode != 0:
            raise UserError(f"{name} {r.digest[:12]} has no {path}: cannot lock its requirements")
        return out.stdout

    return read


def ensure(
    t: Target,
    resolved: object,
    layers: Sequence[str],
    *,
    allow_network: bool,
    find_links: Sequence[Path] = (),
    index_url: str | None = None,
    ca_cert: Path | None = None,
    root: Path = LOCK_ROOT,
    report: Callable[[str], None] = lambda _: None,
) -> PyLock | None:
    """The target's lock, fresh for ``layers``: (re-)resolved where stale when the network may be used.

    Offline, a missing or stale section is a one-line error naming the command that writes it.
    """
    path = lock_path(t, root)
    lock = PyLock.load(path)
    secs = sections(t, source_reader(resolved), layers)
    todo = stale(t, lock, secs)
    if not todo:
        return lock
    if not allow_network:
        what = "has no" if lock is None else f"has stale or missing section(s) {', '.join(todo)} in"
        raise UserError(
            f"the Python lock {path.relative_to(root.parent) if root.parent in path.parents else path} {what} "
            f"it: run `{lock_command(t)}` where PyPI (or --pip-index-url) is reachable, then carry the lock over"
        )
    text = compile_lock(t, secs, previous=lock, find_links=find_links, index_url=index_url, ca_cert=ca_cert,
                        report=report)  # fmt: skip
    if write(path, text):
        report(f"locked   {path}: {', '.join(todo)} resolved; commit the file")
    return PyLock.load(path)


# --------------------------------------------------------------------------------------------------------
# the wheelhouse of a lock (invoke fetch --wheels), and what an offline build needs of it


def _sdist_matches(filename: str, name: str, version: str) -> bool:
    stem = filename.removesuffix(".tar.gz").removesuffix(".zip")
    dist, _, ver = stem.rpartition("-")
    return canonical(dist) == name and ver == version


def locked_file(name: str, version: str, target: object, wheelhouses: Sequence[Path]) -> Path | None:
    """A wheel (for the target) or sdist of ``name==version`` in one of ``wheelhouses``."""
    from .wheels import find_wheel

    found = find_wheel(f"{name}=={version}", target, wheelhouses)  # type: ignore[arg-type]
    if found is not None:
        return found
    for house in wheelhouses:
        if house.is_dir():
            for path in sorted(house.iterdir()):
                if path.name.endswith((".tar.gz", ".zip")) and _sdist_matches(path.name, name, version):
                    return path
    return None


def pip_error(output: str) -> str:
    """The line of pip's output that says what failed: its last ``ERROR:`` line (pip often ends with a
    generic note after it), else its last line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    return ([ln for ln in lines if ln.startswith("ERROR:")] or lines or ["pip failed"])[-1]


def local_part(text: str, target: object, wheelhouse: Path) -> str:
    """The blocks of a lock section whose wheel for the target is in ``wheelhouse``, hashes and all.

    A layer installs them first with ``--no-index`` (images/macros.j2 pip_locked): given a local
    wheel and the index's copy of the same file, pip takes the index's. A local sdist is left to the
    locked install, which can fetch its build requirements.
    """
    blocks = _blocks(text)
    keep = []
    for name, version in pins_of(text).items():
        found = locked_file(name, version, target, [wheelhouse])
        if found is not None and found.name.endswith(".whl") and name in blocks:
            keep.append(blocks[name])
    return "\n".join(keep) + "\n" if keep else ""


def missing_files(lock: PyLock, sections_needed: Sequence[str], target: object,
                  wheelhouses: Sequence[Path]) -> list[str]:  # fmt: skip
    """``name==version`` of every locked package of ``sections_needed`` with no file in the wheelhouses."""
    out = []
    for sec in sections_needed:
        for name, version in lock.pins(sec).items():
            if locked_file(name, version, target, wheelhouses) is None:
                out.append(f"{name}=={version}")
    return out


def download_wheels(
    t: Target,
    lock: PyLock,
    wheelhouse: Path,
    *,
    find_links: Sequence[Path] = (),
    index_url: str | None = None,
    ca_cert: Path | None = None,
    report: Callable[[str], None] = lambda _: None,
) -> int:
    """Download exactly the locked files for the target platform into ``wheelhouse`` (pip checks each hash).

    A package with no wheel for the target comes as its locked sdist: pip builds it while the layer
    installs it (its sha256 is still checked first). Returns how many files the wheelhouse got.
    """
    from .wheels import WheelTarget

    target = WheelTarget(t.python, t.arch, t.os.glibc_version)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    before = set(wheelhouse.iterdir())
    houses = [wheelhouse, *find_links]
    with tempfile.TemporaryDirectory(prefix="ascend-wheels-") as tmp:
        for name, text in lock.sections.items():
            todo = [(pkg, ver) for pkg, ver in pins_of(text).items() if locked_file(pkg, ver, target, houses) is None]
            if not todo:
                continue
            blocks = _blocks(text)
            req = Path(tmp) / f"{name}.txt"
            req.write_text("\n".join(blocks[pkg] for pkg, _ in todo) + "\n")
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--prefer-binary",
                   "--disable-pip-version-check", "--progress-bar", "off", "--dest", str(wheelhouse),
                   "--python-version", t.python, "--implementation", "cp", "-r", str(req)]  # fmt: skip
            for platform in target.platforms(local=False):
                cmd += ["--platform", platform]
            for abi in (target.cp, "abi3", "none"):
                cmd += ["--abi", abi]
            if index_url:
                cmd += ["--index-url", index_url]
            if t.torch_index:
                cmd += ["--extra-index-url", t.torch_index]
            for folder in find_links:
                if folder.is_dir():
                    cmd += ["--find-links", str(folder)]
            if ca_cert:
                cmd += ["--cert", str(ca_cert)]
            report(f"fetching {len(todo)} locked file(s) of the {name} section for {target.describe()}")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise UserError(f"pip download of the {name} section failed: {pip_error(proc.stderr or proc.stdout)}")
    return len(set(wheelhouse.iterdir()) - before)

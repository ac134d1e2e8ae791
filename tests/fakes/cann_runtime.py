"""Stand-ins for CANN's runtime libraries and pyACL, generated from the torch_npu of an image (test-only).

**Not CANN.** Run inside a test image derived FROM a built image of the chain (``tests/smoke.py`` does
that; never in a product image), with the image's own python: ``python cann_runtime.py [--out DIR]``.
Standard library only; it needs ``readelf``, ``nm`` and ``gcc`` (the base layer keeps binutils and gcc).

What it models: the link-time interface torch_npu's shared objects (``torch_npu/**/*.so``: ``_C``, ``lib/``
and the torchair extension under ``dynamo/torchair/core``) expect from CANN, so that ``import torch_npu``
and ``torchair`` work on a machine without CANN or an NPU, and report no device:

* every library those objects name in ``DT_NEEDED`` and the dynamic loader cannot load (no file of that
  name where the loader looks, or a non-ELF file first, such as the short text files tests/fakes/cann.py
  installs) becomes one ELF shared library with that soname;
* each such library exports every symbol the objects leave undefined (``nm -D --undefined-only``, weak
  ones excepted) that none of the loadable libraries defines: torch's (``import torch`` loads them before
  torch_npu), the interpreter's, libc, libstdc++ and the rest of each object's ``DT_NEEDED`` closure;
* behaviour: every function does nothing and returns 0 (``ACL_SUCCESS``/``HCCL_SUCCESS``, a NULL pointer),
  except the ones in :data:`BEHAVIOUR` and the string getters (below);
* an empty ``acl`` module (CANN's pyACL, which MindSpeed-LLM imports) on the image's PYTHONPATH, under the
  toolkit's ``python/site-packages`` where pyACL lives, unless an ``acl`` module is importable already.

Where the libraries go: a non-ELF file that the loader would open first is replaced in place (so the
stand-in takes precedence exactly where the image's ``LD_LIBRARY_PATH``, from set_env.sh, sends the
loader); a library with no file anywhere goes to ``$ASCEND_TOOLKIT_HOME/lib64`` (where the toolkit keeps
libascendcl, libge_runner, libgraph, ...; it is on set_env.sh's LD_LIBRARY_PATH). Afterwards every
``DT_NEEDED`` entry is resolved again and must load an ELF file, or the script fails. The image's ENV is
not changed. On an image whose libraries all load (a real CANN) nothing is written.

What was learned by trying (torch_npu 2.13.0 on torch 2.13.0, x86_64; ``ASCEND_STANDIN_TRACE=1`` makes
every stand-in function print its name on stderr, which is how the calls were found, and variants of
this script with one behaviour removed showed what each one changes):

* ``import torch_npu`` and ``import torchair`` (its extension modules included) call no stand-in at all;
  ``is_available()`` and ``device_count()`` call only ``aclrtGetDeviceCount``. It writes 0 into its
  out-parameter (0 devices, so ``is_available()`` is False). torch_npu 2.13.0 sets the count to 0
  before the call, so a plain return-0 stub reads 0 too; the stand-in writes it anyway, so that a
  torch_npu that does not initialise it gets 0 devices rather than what its stack held;
* the first device use (a tensor ``.npu()``, ``get_rng_state()``, which Megatron's checkpointing asks
  for) runs ``aclInit``, ``aclrtGetDeviceCount``, ``aclrtGetDevice`` and ``aclrtGetSocName``, then stops
  with ``RuntimeError: Unsupported soc version:`` because the SoC name is empty. With a NULL name
  torch_npu goes further and stops at ``Failed to find function aclrtSetDeviceSatMode``; no path
  tried crashes. String getters therefore return an empty string, never NULL: found by name
  (``Get...Msg/Name/Str/String``: ``aclGetRecentErrMsg``, ``aclrtGetSocName``, ``ge::GetFormatName``,
  ``ge::AscendString::GetString``...), they return the address of an empty string mapped at a 4 GiB
  boundary. Its low 32 bits are 0, so when the pattern catches a function that really returns a
  status code (``HcclGetCommName(comm, char *name)`` returns ``HcclResult``), that caller still reads
  0, success;
* the bounds-checked libc functions of Huawei's securec (``snprintf_s``, ``strcpy_s``, ...; CANN ships
  them as libc_sec.so, which libascendcl links) do what their names say: returning 0 ("done") without
  writing would leave torch_npu's buffers unwritten and unterminated. None is called on the paths above.

What it does not model: no device, no memory, no stream, no kernel, no collective: every call "succeeds"
doing nothing, out-parameters other than the device count are left as the caller initialised them, and
C++ functions that return an object by value (``ge::Shape``, ``std::vector``, ``ge::AscendString``) leave
it unconstructed (nothing on the CPU smoke path calls them). Symbols that torch_npu looks up at run time
with ``dlsym`` are not exported (torch_npu treats them as absent, as on an older CANN). C++ vtables and
typeinfo (``_ZTV``/``_ZTI``/``_ZTS``/``_ZTT``) are zero-filled data. Symbol versions are not modelled.
The first device-side call fails in torch_npu itself (e.g. ``Unsupported soc version`` when Megatron asks
for the NPU RNG state).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
DEFAULT_DIRS = ("/lib64", "/usr/lib64", "/lib", "/usr/lib")
DATA_PREFIXES = ("_ZTV", "_ZTI", "_ZTS", "_ZTT")
STRING_GETTER = re.compile(r"Get\w*(?:Msg|Name|Str|String)(?:V\d+)?$")
TRACE_ENV = "ASCEND_STANDIN_TRACE"

# Functions with modelled behaviour: name -> C definition (``NAME`` is replaced by the stub's C name).
BEHAVIOUR = {
    "aclrtGetDeviceCount": "int NAME(unsigned int *count) { TRACE; if (count) *count = 0; return 0; }",
    "memcpy_s": "int NAME(void *d, size_t max, const void *s, size_t n)"
    " { TRACE; if (!d || !s) return 22; if (n > max) return 34; memmove(d, s, n); return 0; }",
    "memset_s": "int NAME(void *d, size_t max, int c, size_t n)"
    " { TRACE; if (!d) return 22; if (n > max) return 34; memset(d, c, n); return 0; }",
    "strcpy_s": "int NAME(char *d, size_t max, const char *s)"
    " { TRACE; if (!d || !s || !max) return 22; size_t n = strlen(s);"
    " if (n >= max) { d[0] = 0; return 34; } memcpy(d, s, n + 1); return 0; }",
    "strncpy_s": "int NAME(char *d, size_t max, const char *s, size_t count)"
    " { TRACE; if (!d || !s || !max) return 22; size_t n = strnlen(s, count);"
    " if (n >= max) { d[0] = 0; return 34; } memcpy(d, s, n); d[n] = 0; return 0; }",
    "vsnprintf_s": "int NAME(char *d, size_t max, size_t count, const char *f, va_list ap)"
    " { TRACE; return standin_vsnprintf_s(d, max, count, f, ap); }",
    "snprintf_s": "int NAME(char *d, size_t max, size_t count, const char *f, ...)"
    " { TRACE; va_list ap; va_start(ap, f); int n = standin_vsnprintf_s(d, max, count, f, ap);"
    " va_end(ap); return n; }",
    "sprintf_s": "int NAME(char *d, size_t max, const char *f, ...)"
    " { TRACE; va_list ap; va_start(ap, f); int n = standin_vsnprintf_s(d, max, max, f, ap);"
    " va_end(ap); return n; }",
}

C_PRELUDE = r"""/* Generated by tests/fakes/cann_runtime.py from this image's torch_npu.
 * NOT CANN: a stand-in for the link-time interface of CANN's runtime libraries (see that script's
 * docstring). No device; every function succeeds doing nothing and returns 0, except the few below. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000 /* Linux 4.17; older kernels take it as a hint, checked below */
#endif

static int standin_trace_on = -1;
static void standin_trace(const char *name) {
    if (standin_trace_on < 0) {
        const char *v = getenv("%(trace_env)s");
        standin_trace_on = v && *v && strcmp(v, "0") != 0;
    }
    if (standin_trace_on) fprintf(stderr, "cann stand-in: %%s\n", name);
}
#define TRACE standin_trace(standin_name)

/* An empty C string whose address has 0 in its low 32 bits (see the script's docstring). */
static const char *standin_empty = "";
__attribute__((constructor)) static void standin_map_empty(void) {
    for (uintptr_t at = (uintptr_t)1 << 36; at < (uintptr_t)1 << 46; at += (uintptr_t)1 << 32) {
        void *p = mmap((void *)at, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (p == (void *)at) { standin_empty = p; return; }
        if (p != MAP_FAILED) munmap(p, 4096);
    }
}

static int standin_vsnprintf_s(char *d, size_t max, size_t count, const char *f, va_list ap) {
    if (!d || !f || !max) return -1;
    size_t limit = count < max - 1 ? count + 1 : max;
    int n = vsnprintf(d, limit, f, ap);
    if (n < 0) { d[0] = 0; return -1; }
    return (size_t)n >= limit ? -1 : n;
}
"""


def run(*argv: str) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"cann_runtime: `{' '.join(argv)}` failed: {out.stderr.strip().splitlines()[-1:]}")
    return out.stdout


def elf_kind(path: Path) -> bytes | None:
    """ELF class + machine bytes of ``path``, or None when it is not an ELF file."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(20)
    except OSError:
        return None
    return head[4:5] + head[18:20] if head[:4] == ELF_MAGIC and len(head) == 20 else None


@dataclass
class Dynamic:
    """``DT_NEEDED``, ``DT_RPATH`` and ``DT_RUNPATH`` of one object (``$ORIGIN`` expanded)."""

    path: Path
    needed: list[str] = field(default_factory=list)
    rpath: list[str] = field(default_factory=list)
    runpath: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Dynamic:
        """From ``readelf -d``."""
        dyn = cls(path)
        for line in run("readelf", "-d", "-W", str(path)).splitlines():
            match = re.search(r"\((NEEDED|RPATH|RUNPATH)\)\s+[^\[]*\[(.*)\]", line)
            if not match:
                continue
            kind, value = match.groups()
            if kind == "NEEDED":
                dyn.needed.append(value)
            else:
                origin = str(path.parent)
                dirs = [d.replace("${ORIGIN}", origin).replace("$ORIGIN", origin) for d in value.split(":") if d]
                (dyn.rpath if kind == "RPATH" else dyn.runpath).extend(dirs)
        return dyn


class Loader:
    """Where the dynamic loader finds a library: the glibc search order, as far as it matters here."""

    def __init__(self, extra_dirs: list[str], kind: bytes) -> None:
        self.ld_library_path = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
        self.extra_dirs = extra_dirs  # directories of libraries loaded before torch_npu (torch's)
        self.kind = kind
        self.cache: dict[str, list[str]] = {}
        for line in run("ldconfig", "-p").splitlines()[1:]:
            name, _, path = line.strip().partition(" => ")
            self.cache.setdefault(name.split(" (", 1)[0], []).append(path)

    def find(self, name: str, obj: Dynamic) -> tuple[str, Path | None]:
        """("elf", path) for a loadable file; ("not-elf", path) when a non-ELF file comes first;
        ("missing", None) when there is none."""
        if "/" in name:
            candidates = [Path(name)]
        else:
            dirs = (obj.rpath if not obj.runpath else []) + self.ld_library_path + obj.runpath + self.extra_dirs
            candidates = [Path(d) / name for d in dirs]
            candidates += [Path(p) for p in self.cache.get(name, [])]
            candidates += [Path(d) / name for d in DEFAULT_DIRS]
        for path in candidates:
            if not path.is_file():
                continue
            kind = elf_kind(path)
            if kind is None:
                return "not-elf", path
            if kind == self.kind:  # another class or machine is skipped, as ld.so does
                return "elf", path
        return "missing", None


def symbols(path: Path, defined: bool) -> set[str]:
    """Dynamic symbols of ``path``: defined ones, or strongly undefined ones; versions stripped."""
    flag = "--defined-only" if defined else "--undefined-only"
    out: set[str] = set()
    for line in run("nm", "-D", flag, str(path)).splitlines():
        parts = line.split()
        if not parts or (not defined and parts[-2:-1] != ["U"]):
            continue
        out.add(parts[-1].split("@", 1)[0])
    return out


def package_dir(name: str) -> Path:
    """The directory of an installed package, without importing it (torch_npu cannot import yet)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"cann_runtime: {name} is not installed in {sys.executable}")
    return Path(next(iter(spec.submodule_search_locations)))


def torch_npu_objects(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.so*") if p.is_file() and elf_kind(p) is not None)


def demangle(names: list[str]) -> dict[str, str]:
    mangled = [n for n in names if n.startswith("_Z")]
    if not mangled:
        return {}
    out = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True, text=True, check=True)
    pretty = out.stdout.splitlines()
    return {name: pretty[i] for i, name in enumerate(mangled) if i < len(pretty)}


def is_string_getter(name: str, pretty: str) -> bool:
    """A C string getter by name: ``aclGetRecentErrMsg``, ``ge::AscendString::GetString() const``."""
    base = pretty.split("(", 1)[0].split("::")[-1].split()[-1] if "(" in pretty else name
    return bool(STRING_GETTER.search(base))


def stub(name: str, pretty: str, c_name: str) -> tuple[str, list[str]]:
    """(behaviour, C lines) of one stand-in symbol; ``c_name`` is its identifier in the C file."""
    label = f'__asm__("{name}")'
    if name.startswith(DATA_PREFIXES):
        return "data", [f"__attribute__((aligned(16))) char {c_name}[256] {label} = {{0}};"]
    if name in BEHAVIOUR:
        kind, definition = "modelled", BEHAVIOUR[name].replace("NAME", c_name, 1)
    elif is_string_getter(name, pretty):
        kind, definition = "string", f"const char *{c_name}(void) {{ TRACE; return standin_empty; }}"
    else:
        kind, definition = "0", f"long {c_name}(void) {{ TRACE; return 0; }}"
    signature = definition.split(" {", 1)[0]
    return kind, [
        f'static const char {c_name}_name[] = "{name}";',
        f"#define standin_name {c_name}_name",
        f"{signature} {label};",
        definition,
        "#undef standin_name",
    ]


def c_source(names: list[str]) -> tuple[str, dict[str, str]]:
    """The C file of all stand-in symbols, and the behaviour each got ("0", "string", "data", "modelled")."""
    pretty = demangle(names)
    lines = [C_PRELUDE % {"trace_env": TRACE_ENV}]
    kinds: dict[str, str] = {}
    for i, name in enumerate(names):
        kinds[name], code = stub(name, pretty.get(name, name), f"standin_{i}")
        lines += [f"/* {pretty.get(name, name)} */", *code]
    return "\n".join(lines) + "\n", kinds


def plan(site_torch_npu: Path, torch_lib: Path) -> dict:
    """Which libraries torch_npu cannot load, and which symbols nothing loadable defines."""
    kind = elf_kind(Path(os.path.realpath(sys.executable)))
    assert kind is not None, sys.executable
    loader = Loader([str(torch_lib)], kind)
    objects = torch_npu_objects(site_torch_npu)
    own = {p.name for p in objects}
    present: dict[Path, None] = dict.fromkeys([*objects, Path(os.path.realpath(sys.executable))])
    present.update(dict.fromkeys(p for p in sorted(torch_lib.glob("*.so*")) if elf_kind(p) == kind))
    unresolved: dict[str, dict] = {}
    queue = list(present)
    seen: set[Path] = set()
    while queue:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        dyn = Dynamic.read(path)
        for name in dyn.needed:
            status, found = loader.find(name, dyn)
            if status == "elf" and found is not None:
                present.setdefault(found, None)
                queue.append(found)
            elif name not in own and path in objects:
                entry = unresolved.setdefault(name, {"status": status, "path": found, "needed_by": []})
                entry["needed_by"].append(str(path.relative_to(site_torch_npu.parent)))
    defined: set[str] = set()
    for path in present:
        defined |= symbols(path, defined=True)
    undefined: set[str] = set()
    for path in objects:
        undefined |= symbols(path, defined=False)
    return {
        "objects": [str(p) for p in objects],
        "unresolved": unresolved,
        "missing_symbols": sorted(undefined - defined),
        "loader": loader,
    }


def install_dir(loader: Loader) -> Path:
    home = os.environ.get("ASCEND_TOOLKIT_HOME")
    if home and os.path.realpath(f"{home}/lib64") in {os.path.realpath(d) for d in loader.ld_library_path}:
        return Path(home) / "lib64"
    for directory in loader.ld_library_path:
        if Path(directory).is_dir():
            return Path(directory)
    raise SystemExit("cann_runtime: no directory on LD_LIBRARY_PATH: is the image's CANN environment set?")


def acl_module() -> Path | None:
    """Write the empty pyACL stand-in where pyACL lives, unless ``acl`` is importable already."""
    if importlib.util.find_spec("acl") is not None:
        return None
    on_path = [p for p in os.environ.get("PYTHONPATH", "").split(":") if p and Path(p).is_dir()]
    home = os.environ.get("ASCEND_TOOLKIT_HOME", "")
    preferred = [p for p in on_path if home and os.path.realpath(p) == os.path.realpath(f"{home}/python/site-packages")]
    if not (preferred or on_path):
        raise SystemExit("cann_runtime: PYTHONPATH names no directory: is the image's CANN environment set?")
    target = Path((preferred or on_path)[0]) / "acl.py"
    target.write_text(
        '"""Stand-in for CANN\'s pyACL module ``acl`` (tests/fakes/cann_runtime.py), NOT CANN.\n\n'
        "It models only that ``import acl`` succeeds (MindSpeed-LLM imports it); it has no functions and\n"
        'there is no device behind it.\n"""\n'
    )
    return target


def generate(out: Path) -> dict:
    site_torch_npu = package_dir("torch_npu")
    torch_lib = package_dir("torch") / "lib"
    found = plan(site_torch_npu, torch_lib)
    loader: Loader = found.pop("loader")
    unresolved = found["unresolved"]
    report: dict = {"libraries": {}, "symbols": {}, "acl_module": None}
    if unresolved:
        names = found["missing_symbols"]
        source, kinds = c_source(names)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cann_standin.c").write_text(source)
        obj = out / "cann_standin.o"
        run("gcc", "-O1", "-fPIC", "-fvisibility=default", "-c", str(out / "cann_standin.c"), "-o", str(obj))
        fallback = install_dir(loader)
        for name, entry in sorted(unresolved.items()):
            target = Path(os.path.realpath(entry["path"])) if entry["status"] == "not-elf" else fallback / name
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".standin-tmp")
            run("gcc", "-shared", f"-Wl,-soname,{name}", "-o", str(tmp), str(obj))
            os.replace(tmp, target)
            where = os.path.realpath(target)  # as the loader reports it (/proc/PID/maps)
            report["libraries"][name] = {"path": where, "was": entry["status"], "needed_by": entry["needed_by"]}
        report["symbols"] = kinds
        again = plan(site_torch_npu, torch_lib)["unresolved"]
        if again:
            raise SystemExit(f"cann_runtime: still not loadable after installing stand-ins: {sorted(again)}")
    acl = acl_module()
    report["acl_module"] = os.path.realpath(acl) if acl else None
    out.mkdir(parents=True, exist_ok=True)
    (out / "stand-ins.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path("/opt/cann-standin"), help="sources and report go here")
    args = parser.parse_args(argv)
    report = generate(args.out)
    kinds = list(report["symbols"].values())
    summary = {k: kinds.count(k) for k in sorted(set(kinds))}
    for name, lib in sorted(report["libraries"].items()):
        print(f"cann_runtime: {name} -> {lib['path']} ({lib['was']} before; {len(kinds)} symbols)")
    print(f"cann_runtime: symbols by behaviour {summary}; acl module: {report['acl_module']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

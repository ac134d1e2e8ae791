"""Stand-ins for Huawei's CANN ``.run`` installers (toolkit, chip kernels or ops, NNAL), for offline tests.

**These are not Huawei's software.** They stand in for ``Ascend-cann-toolkit_<ver>_linux-<arch>.run``,
``Ascend-cann-kernels-910b_<ver>_linux-<arch>.run`` / ``Atlas-A3-cann-kernels_<ver>_linux-<arch>.run``
(before 8.5.0) or ``Ascend-cann-910b-ops_<ver>_linux-<arch>.run`` / ``Ascend-cann-A3-ops_...`` (8.5.0 and
later, see the last section) and ``Ascend-cann-nnal_<ver>_linux-<arch>.run``, which cannot be downloaded on
this project's machines, so that the image chain can be built for real through a Docker engine. Each file is
a self-contained bash script in the style of a makeself archive: a shell header, a marker line, then an
uncompressed tar archive that the header extracts with ``tail``/``tar`` from ``"$0"`` into a temporary
directory (removed again on exit).

What they imitate (see ``shared/reference/ascend-runtime.md`` §1):

* the official file names, and the installer flags ``--install``, ``--quiet``/``-q``, ``--install-for-all``,
  ``--install-path=<p>``, ``--full`` (toolkit only), ``--devel`` (toolkit and kernels only), ``--upgrade``,
  ``--uninstall``, ``--check``, plus makeself's ``--help``, ``--info``, ``--list``, ``--noexec``,
  ``--extract=<dir>``. An option the package does not know prints the usage to stderr and exits 1, as the
  Huawei-modified makeself header does; so does a call without an operation;
* the EULA question on stdin (``y``/``Y`` goes on, anything else stops) unless ``--quiet`` is given;
* the default install path (``/usr/local/Ascend`` for root, ``$HOME/Ascend`` otherwise, or the
  ``Install_Path`` recorded in ``ascend_cann_install.info``), the architecture check against ``uname -m``;
* install order: the kernels refuse to install without the same toolkit version at the install path, and
  NNAL refuses unless the toolkit environment is sourced (``ASCEND_TOOLKIT_HOME`` set to a directory);
* the installed layout and version records: ``ascend-toolkit/<ver>`` with ``latest`` -> ``<ver>``,
  ``ascend-toolkit/set_env.sh`` (the real variable set and sub-paths, including the real script's driver
  line and its trailing ``:`` when a variable was empty), ``latest/<arch>-linux/ascend_toolkit_install.info``,
  ``latest/version.cfg`` (``runtime_running_version=[7.x.y...:<ver>]`` lines), component ``version.info`` files;
  kernels under ``latest/opp/built-in/op_impl/ai_core/tbe/kernel/<chip dir>/`` recorded in
  ``latest/opp_kernel/version.info`` and ``version.cfg``; NNAL's ``nnal/atb/set_env.sh`` (``--cxx_abi=0|1``,
  else torch's ``compiled_with_cxx11_abi()``, else 1 when torch cannot be imported), ``nnal/atb/latest/
  version.info`` (``Ascend-cann-atb : <ver>``) and the ``latest/atb/cxx_abi_0`` / ``cxx_abi_1`` trees;
* ``--install-for-all``: other users can read the install only with it (otherwise ``o-rwx``);
* ``payload_bytes`` of deterministic pseudo-random (incompressible) bytes installed as a file in each
  package's tree, so that benchmarks see realistic sizes.

What they do not imitate: no real library, kernel or compiler is installed (the ``.so`` files are short
text files saying so); the archive is not compressed (makeself ``--nocomp``; the payload is incompressible
anyway); NNAL installs only ATB (no SiP); ``--upgrade`` is a re-install; internal component versions
(``7.x.y.z.b``) are invented except for 8.0.RC3 and 8.0.0, where they are the ones seen on real installs;
kernels names use the ``_linux-<arch>`` form of 8.0.RC3 and later. For test hygiene the global records that
the real installer always writes (``/etc/Ascend/ascend_cann_install.info`` and ``/var/log/ascend_seclog``
for root, their ``$HOME`` equivalents otherwise) are written only when the install path is the default one.

Output is deterministic: the same arguments give byte-identical files (same sha256).

**CANN 8.5.0 and later** (:func:`uses_cann_layout`; versions compare as 8.3.RC1 < 8.5.0 < 9.0.0, x.y.RCn before
x.y.0). Everything above holds unless said here. Sources: [issue] ascend-llm-stack issue 11; [inst] hiascend
CANN 8.5.0 "Installing CANN" (canncommercial/850 and CANNCommunityEdition/850, instg_0008/0089/0093) and 9.0.0
(canncommercial/900 instg_0008); [paths] hiascend canncommercial/850 instg_0044 "File Paths"; [deployer]
ascend-deployer 26.0.0 (PyPI): ``downloader/software/CANN_8.5.0.json`` / ``CANN_9.0.0.json``,
``library/install_cann.py``, ``library/process_test.py``; [image] Ascend/cann-container-image
``cann/8.5.0-910b-ubuntu22.04-py3.11/Dockerfile`` (after "Fix 8.5.0 env", 036bd46a) and ``cann/9.0.0-*``;
[env] the environment of the official 8.5.0 image after its entrypoint sourced ``ascend-toolkit/set_env.sh``,
and its ``ascend_toolkit_install.info``, printed by vllm-ascend's ``collect_env`` in a public bug report;
[measured] public notes of real installs found by code search (an xlings recipe for the 8.5.0 toolkit, a
9.2.0-beta.2 vllm-ascend build note, an A3 8.5.0 kernel path); [hicann] READMEs of hicann operator repos;
[msllm] MindSpeed-LLM install guides (v2.3.0, v26.0.0, v26.1.0). What the 8.5 stand-in models:

* the package set: ``Ascend-cann-toolkit_``, ``Ascend-cann-<chip>-ops_`` with chip ``910b`` (Atlas A2), ``A3``
  (capital), ``910``, ``310p``, and ``Ascend-cann-nnal_`` (``_<ver>_linux-<arch>.run``) [deployer, issue,
  image, msllm]; the result key of the chip package is ``ops-<chip>`` where older releases give
  ``kernels-<chip>``;
* the toolkit tree ``<install-path>/cann-<ver>/`` with the absolute links ``<install-path>/cann`` ->
  ``<install-path>/cann-<ver>`` and ``<install-path>/ascend-toolkit/latest`` -> ``<install-path>/cann``
  [measured; deployer: "the new CANN makes an ascend-toolkit link"], and ``ascend-toolkit/set_env.sh`` ->
  ``ascend-toolkit/latest/set_env.sh`` [measured, 9.2.0-beta.2], so ``cann/set_env.sh``, ``cann-<ver>/set_env.sh``
  and ``ascend-toolkit/set_env.sh`` are one file [inst, msllm, image]; default install path as before [inst];
* ``set_env.sh`` exports ``ASCEND_TOOLKIT_HOME``, ``ASCEND_HOME_PATH`` and ``ASCEND_AICPU_PATH`` =
  ``<install-path>/cann-<ver>`` whichever link was sourced, ``ASCEND_OPP_PATH`` = ``.../opp``, ``TOOLCHAIN_HOME``
  = ``.../toolkit`` [env, image]; ``LD_LIBRARY_PATH`` gets ``lib64``, ``lib64/plugin/opskernel``,
  ``lib64/plugin/nnengine``, ``opp/built-in/op_impl/ai_core/tbe/op_tiling/lib/linux/<arch>``, ``tools/aml/lib64``,
  ``tools/aml/lib64/plugin``, then the driver's ``lib64``, ``lib64/common``, ``lib64/driver``, in that order
  [env]; ``PYTHONPATH`` ``python/site-packages`` and ``opp/built-in/op_impl/ai_core/tbe``; ``PATH`` ``bin``,
  ``tools/ccec_compiler/bin``, ``tools/profiler/bin``, ``tools/ascend_system_advisor/asys``,
  ``tools/show_kernel_debug_data``, ``tools/msobjdump`` [image]; the ccec stand-in sits in
  ``<arch>-linux/ccec_compiler/bin`` [measured];
* ``cann-<ver>/<arch>-linux/ascend_toolkit_install.info`` (read as ``<install-path>/cann/<arch>-linux/...``
  [paths]) with ``path=<install-path>/cann-<ver>`` and, for 8.5.0, the real innerversion and
  compatible_version [env]; headers under ``<arch>-linux/include`` [measured: ``cann-8.5.0/x86_64-linux/asc``];
* the ops package refuses unless the toolkit of the same version is installed at the same install path
  ("ops needs the same-version Toolkit installed in the same path" [inst]; ascend-deployer looks for
  ``cann-<ops version>/*/ascend_toolkit_install.info`` [deployer]); it installs the chip's kernels into
  ``cann-<ver>/opp/built-in/op_impl/ai_core/tbe/kernel/<chip dir>/`` (``ascend910_93`` for A3 [measured]) and
  writes ``cann-<ver>/<arch>-linux/ascend_ops_install.info`` (``package_name=Ascend-cann-<chip>-ops``,
  ``version=`` [hicann]); a second, different chip's ops package into the same tree is refused ("ops packages
  of several chips cannot yet be installed in the same path; install Toolkit and each chip's ops to different
  paths" [inst]); the ops package brings ``libhccl.so`` (the ops package "integrates ... the HCCL collective
  communication library" [inst]);
* NNAL installs as before (``nnal/atb/set_env.sh``), but its ATB ``set_env.sh`` takes cxx_abi_1 unless
  ``--cxx_abi=0`` is given [issue; the official 8.5.0/9.0.0 images record ``.../cxx_abi_1`` [image]].

Chosen where no source shows the detail (the plainest behaviour): ops and toolkit versions must be equal for
9.0.0 too (its guide says "a compatible version"); ``ascend_ops_install.info``'s keys other than
package_name/version, the ``[Ops]`` label and all messages; ``version.cfg`` keeps its earlier form (scripts read
``cann/version.cfg``, its 8.5 content is not public) and invented component versions; ``tools/ccec_compiler`` is a
relative link to ``../<arch>-linux/ccec_compiler`` and the other tool directories are empty; the toolkit
refuses to install beside an ``ascend-toolkit/<version>`` tree of an earlier release, even with ``--upgrade``
(the guide says to upgrade from an earlier release with the upgrade option or to uninstall it first [inst]);
several ``cann-<ver>`` trees may coexist, ``cann`` follows the last toolkit installed and uninstalling that one
removes the links; ATB's default does not ask torch.
Not modelled: ``cann-<ver>/share/info/ascendnpu-ir/bin/set_env.sh`` (BiSheng, sourced by the official images);
``ASCEND_TOOLKIT_LATEST_HOME`` and 9.0's ``CMAKE_PREFIX_PATH`` (image ``ENV`` lines, not shown to come from
``set_env.sh``); ``--whitelist=nnrt`` and the NNAE/NNRT scenes that 8.5 folds into the toolkit; ``install.conf``;
the ``.zip`` that wraps each published ``.run``; the 310b and 950 ops; the ops' sub-packages (ops_transformer,
...); mixing releases before and after 8.5.0 in one install path beyond that one refusal; an ops package
given ``--full`` prints its usage and exits 1 like any unknown option (a measured 9.2.0-beta.2 950 ops
package exits 0 there).
"""

from __future__ import annotations

import hashlib
import io
import re
import shlex
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ARCHES",
    "CANN_LAYOUT_FROM",
    "CHIPS",
    "OPS_FILE",
    "make_cann_packages",
    "package_file_names",
    "uses_cann_layout",
]

ARCHES = ("x86_64", "aarch64")

# chip -> (kernels file name pattern of releases before 8.5.0, kernel directory under .../tbe/kernel).
# "910b" and "A3" are matrix.yaml's keys; from 8.5.0 the chip package is OPS_FILE with the key as {chip}.
CHIPS: dict[str, tuple[str, str]] = {
    "910b": ("Ascend-cann-kernels-910b_{version}_linux-{arch}.run", "ascend910b"),
    "A3": ("Atlas-A3-cann-kernels_{version}_linux-{arch}.run", "ascend910_93"),
    "910": ("Ascend-cann-kernels-910_{version}_linux-{arch}.run", "ascend910"),
    "310p": ("Ascend-cann-kernels-310p_{version}_linux-{arch}.run", "ascend310p"),
}

TOOLKIT_FILE = "Ascend-cann-toolkit_{version}_linux-{arch}.run"
OPS_FILE = "Ascend-cann-{chip}-ops_{version}_linux-{arch}.run"
NNAL_FILE = "Ascend-cann-nnal_{version}_linux-{arch}.run"

# The first release with ops packages and the cann-<version> install root.
CANN_LAYOUT_FROM = "8.5.0"

# Component versions seen on real installs (version.cfg, e.g. "runtime_running_version=[7.6.0.1.220:8.0.0]")
# and toolkit inner versions (ascend_toolkit_install.info). Other releases get invented, stable values.
_COMPONENT_VERSIONS = {"8.0.RC3": "7.5.0.1.129", "8.0.0": "7.6.0.1.220"}
_INNER_VERSIONS = {"8.0.0": "V100R001C20SPC001B251", "8.5.0": "V100R001C25SPC001B232"}
# compatible_version of a real 8.5.0 ascend_toolkit_install.info (vllm-ascend issue's collect_env output).
_CANN_COMPATIBLE = ",".join(f"[V100R001C{n}]" for n in (15, 18, 19, 20, 21, 23))

_MTIME = 1704067200  # 2024-01-01T00:00:00Z, for every archive member
_TIMESTAMP = "20240101_000000000"
_SHA_PLACEHOLDER = "0" * 64
_CHUNK = 1 << 20
_VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9A-Za-z.]+$")


def package_file_names(version: str, arch: str, chips: Sequence[str] = ("910b",)) -> dict[str, str]:
    """The official file names, keyed as :func:`make_cann_packages` keys its result."""
    _check_args(version, arch, chips, 0)
    names = {"toolkit": TOOLKIT_FILE.format(version=version, arch=arch)}
    for chip in chips:
        key = _chip_key(chip)
        if uses_cann_layout(version):
            names[f"ops-{chip}"] = OPS_FILE.format(chip=key, version=version, arch=arch)
        else:
            names[f"kernels-{chip}"] = CHIPS[key][0].format(version=version, arch=arch)
    names["nnal"] = NNAL_FILE.format(version=version, arch=arch)
    return names


def make_cann_packages(
    dest: Path, version: str, arch: str, chips: Sequence[str] = ("910b",), payload_bytes: int = 0
) -> dict[str, Path]:
    """Write stand-in CANN installers for ``version``/``arch`` into ``dest``.

    Returns ``{"toolkit": path, <chip package>: path (one per chip, in the given order), "nnal": path}``; the
    chip package's key is ``"kernels-<chip>"`` before CANN 8.5.0 and ``"ops-<chip>"`` from 8.5.0 on (see
    :func:`uses_cann_layout`), with ``<chip>`` as given. ``chips`` takes matrix.yaml's chip keys (``910b``,
    ``A3``; also ``910``, ``310p``). ``payload_bytes`` (per package) of incompressible deterministic data are
    installed as ``standin-payload.bin``.
    """
    _check_args(version, arch, chips, payload_bytes)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    names = package_file_names(version, arch, chips)
    comp = _component_version(version)
    inner = _INNER_VERSIONS.get(version) or _invented_inner_version(version)
    new = uses_cann_layout(version)
    out: dict[str, Path] = {}

    make_toolkit = _cann_toolkit_spec if new else _toolkit_spec
    toolkit = make_toolkit(names["toolkit"], version, arch, comp, inner, payload_bytes)
    out["toolkit"] = _write_run(dest / names["toolkit"], toolkit)
    for chip in chips:
        key = f"{'ops' if new else 'kernels'}-{chip}"
        make_chip = _ops_spec if new else _kernels_spec
        spec = make_chip(names[key], version, arch, _chip_key(chip), comp, payload_bytes)
        out[key] = _write_run(dest / names[key], spec)
    nnal = _nnal_spec(names["nnal"], version, arch, payload_bytes)
    out["nnal"] = _write_run(dest / names["nnal"], nnal)
    return out


def uses_cann_layout(version: str) -> bool:
    """True for releases from CANN 8.5.0 on: ops packages and the ``cann-<version>`` root (8.3.RC1 -> False)."""
    return _version_key(version) >= _version_key(CANN_LAYOUT_FROM)


# --------------------------------------------------------------------------------------------------------
# argument checks and versions


def _chip_key(chip: str) -> str:
    for key in CHIPS:
        if key.lower() == chip.lower():
            return key
    raise ValueError(f"unknown chip {chip!r}: expected one of {', '.join(CHIPS)}")


def _check_args(version: str, arch: str, chips: Sequence[str], payload_bytes: int) -> None:
    if not _VERSION_RE.match(version):
        raise ValueError(f"not a CANN version: {version!r}")
    if arch not in ARCHES:
        raise ValueError(f"unknown arch {arch!r}: expected one of {', '.join(ARCHES)}")
    if isinstance(chips, str):
        raise TypeError("chips must be a sequence of chip names, not a string")
    keys = [_chip_key(c) for c in chips]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate chips: {list(chips)}")
    if payload_bytes < 0:
        raise ValueError("payload_bytes must be >= 0")


def _release(version: str) -> tuple[int, int, bool]:
    """(major, minor, is_rc) of a CANN version such as 8.2.RC1 or 8.0.0."""
    major, minor, rest = version.split(".", 2)
    return int(major), int(minor), rest.upper().startswith("RC")


def _version_key(version: str) -> tuple[int, int, int, int]:
    """A sort key for CANN versions: 8.3.RC1 < 8.5.0 < 9.0.0; x.y.RCn precede x.y.0, other labels precede RCs."""
    if not _VERSION_RE.match(version):
        raise ValueError(f"not a CANN version: {version!r}")
    major, minor, rest = version.split(".", 2)
    if m := re.match(r"[0-9]+", rest):
        return int(major), int(minor), 2, int(m.group())
    if m := re.match(r"RC([0-9]+)", rest, re.IGNORECASE):
        return int(major), int(minor), 1, int(m.group(1))
    return int(major), int(minor), 0, 0


def _component_version(version: str) -> str:
    if version in _COMPONENT_VERSIONS:
        return _COMPONENT_VERSIONS[version]
    major, minor, rc = _release(version)
    # 8.0.RC3 -> 7.5 and 8.0.0 -> 7.6 on real installs; continue that pattern for other releases.
    return f"7.{5 + 2 * minor + (0 if rc else 1) + 10 * (major - 8)}.0.1.100"


def _invented_inner_version(version: str) -> str:
    major, minor, rc = _release(version)
    return f"V100R001C{20 + 2 * minor + (0 if rc else 1) + 10 * (major - 8)}B100"


# --------------------------------------------------------------------------------------------------------
# archive contents


@dataclass
class _Entry:
    path: str
    data: bytes = b""
    mode: int = 0o644
    kind: str = "file"  # file | dir | link
    link: str = ""  # symlink target
    payload: tuple[bytes, int] | None = None  # (seed, size): incompressible bytes


def _dir(path: str) -> _Entry:
    return _Entry(path, mode=0o755, kind="dir")


def _link(path: str, target: str) -> _Entry:
    return _Entry(path, mode=0o777, kind="link", link=target)


@dataclass
class _Spec:
    kind: str  # toolkit | kernels | nnal (releases before 8.5.0); cann-toolkit | ops | nnal (8.5.0 and later)
    file: str
    pkg_name: str
    label: str
    version: str
    arch: str
    entries: list[_Entry] = field(default_factory=list)
    chip: str = ""
    chip_dir: str = ""
    component_version: str = ""
    inner_version: str = ""


def _text(path: str, text: str, mode: int = 0o644) -> _Entry:
    return _Entry(path, text.encode(), mode)


def _stub_lib(path: str, what: str) -> _Entry:
    name = path.rsplit("/", 1)[-1]
    return _text(path, f"stand-in for {name} of {what} (tests/fakes): not a real library\n")


def _payload(path: str, seed: str, size: int) -> list[_Entry]:
    return [_Entry(path, payload=(seed.encode(), size))] if size else []


def _version_info(comp: str, version: str, extra: str = "") -> str:
    return f"Version={comp}\nversion_dir={version}\ntimestamp={_TIMESTAMP}\n{extra}"


def _toolkit_set_env() -> str:
    home = "${ASCEND_TOOLKIT_HOME}"
    drv = "/usr/local/Ascend/driver/lib64"
    libs = [
        f"{home}/lib64",
        f"{home}/lib64/plugin/opskernel",
        f"{home}/lib64/plugin/nnengine",
        f"{home}/opp/built-in/op_impl/ai_core/tbe/op_tiling/lib/linux/$(arch)",
    ]
    lines = [
        "# Stand-in for CANN's ascend-toolkit/set_env.sh, written by a tests/fakes installer (not Huawei's).",
        "# Exports the real script's variables with the real sub-paths of the toolkit.",
        f"export LD_LIBRARY_PATH={drv}:{drv}/common:{drv}/driver:$LD_LIBRARY_PATH",
        'export ASCEND_TOOLKIT_HOME="@@TOOLKIT_ROOT@@/latest"',
        f"export LD_LIBRARY_PATH={':'.join(libs)}:$LD_LIBRARY_PATH",
        f"export LD_LIBRARY_PATH={home}/tools/aml/lib64:{home}/tools/aml/lib64/plugin:$LD_LIBRARY_PATH",
        f"export PYTHONPATH={home}/python/site-packages:{home}/opp/built-in/op_impl/ai_core/tbe:$PYTHONPATH",
        f"export PATH={home}/bin:{home}/compiler/ccec_compiler/bin:{home}/tools/ccec_compiler/bin:$PATH",
        f"export ASCEND_AICPU_PATH={home}",
        f"export ASCEND_OPP_PATH={home}/opp",
        f"export TOOLCHAIN_HOME={home}/toolkit",
        f"export ASCEND_HOME_PATH={home}",
    ]
    return "\n".join(lines) + "\n"


def _ccec(what: str) -> str:
    return (
        "#!/bin/bash\n"
        f"# Stand-in for the ccec compiler of {what} (tests/fakes): compiles nothing.\n"
        f'echo "ccec stand-in from {what} (tests/fakes); no compiler is installed"\n'
        '[ "${1:-}" = --version ] && exit 0\n'
        "exit 1\n"
    )


def _toolkit_spec(file: str, version: str, arch: str, comp: str, inner: str, payload_bytes: int) -> _Spec:
    what = f"CANN toolkit {version}"
    plat = f"{arch}-linux"
    components = ["runtime", "compiler", "hccl", "opp", "toolkit", "aoe", "ncs"]
    cfg = ["# version: 1.0"]
    cfg += [f"{c}_running_version=[{comp}:{version}]" for c in components]
    cfg += [f"{c}_upgrade_version=[{comp}:{version}]" for c in components]
    compatible = ",".join(f"[V100R001C{n}]" for n in (15, 17, 18, 19, 20, 21, 23))
    install_info = (
        "package_name=Ascend-cann-toolkit\n"
        f"version={version}\n"
        f"innerversion={inner}\n"
        f"compatible_version={compatible}\n"
        f"arch={arch}\n"
        "os=linux\n"
        f"path=@@TOOLKIT_ROOT@@/{version}/{plat}\n"
    )
    pkg_doc = f'"""Stand-in for a Python package of {what} (tests/fakes): empty."""\n'
    c = "content"
    entries = [
        _stub_lib(f"{c}/{plat}/lib64/libascendcl.so", what),
        _stub_lib(f"{c}/{plat}/lib64/libhccl.so", what),
        _stub_lib(f"{c}/{plat}/lib64/libruntime.so", what),
        _stub_lib(f"{c}/{plat}/lib64/plugin/opskernel/libfe.so", what),
        _stub_lib(f"{c}/{plat}/lib64/plugin/nnengine/libnnengine.so", what),
        _text(f"{c}/{plat}/include/acl/acl.h", f"/* stand-in header of {what} (tests/fakes) */\n"),
        _dir(f"{c}/{plat}/bin"),
        _link(f"{c}/lib64", f"{plat}/lib64"),
        _link(f"{c}/include", f"{plat}/include"),
        _link(f"{c}/bin", f"{plat}/bin"),
        _text(f"{c}/compiler/ccec_compiler/bin/ccec", _ccec(what), 0o755),
        _text(f"{c}/compiler/version.info", _version_info(comp, version)),
        _text(f"{c}/runtime/version.info", _version_info(comp, version)),
        _text(f"{c}/opp/version.info", _version_info(comp, version)),
        _text(f"{c}/toolkit/version.info", _version_info(comp, version)),
        _text(f"{c}/opp/built-in/op_impl/ai_core/tbe/impl/__init__.py", pkg_doc),
        _stub_lib(f"{c}/opp/built-in/op_impl/ai_core/tbe/op_tiling/lib/linux/{arch}/liboptiling.so", what),
        _text(f"{c}/python/site-packages/te/__init__.py", pkg_doc),
        _text(f"{c}/python/site-packages/tbe/__init__.py", pkg_doc),
        _stub_lib(f"{c}/tools/aml/lib64/libaml_stub.so", what),
        _dir(f"{c}/tools/aml/lib64/plugin"),
        _text(f"{c}/version.cfg", "\n".join(cfg) + "\n"),
        *_payload(f"{c}/share/standin-payload.bin", file, payload_bytes),
        _text("templates/set_env.sh", _toolkit_set_env()),
        _text(f"templates/{plat}/ascend_toolkit_install.info", install_info),
    ]
    return _Spec(
        "toolkit",
        file,
        "Ascend-cann-toolkit",
        "[Toolkit]",
        version,
        arch,
        entries,
        component_version=comp,
        inner_version=inner,
    )


def _kernels_spec(file: str, version: str, arch: str, chip: str, comp: str, payload_bytes: int) -> _Spec:
    chip_dir = CHIPS[chip][1]
    what = f"CANN {chip} kernels {version}"
    k = f"content/kernel/{chip_dir}"
    info = _version_info(comp, version, f'ops_version={comp}\nrequired_package_toolkit_version="{version}"\n')
    entries = [
        _text(f"{k}/add/Add_standin.json", f'{{"stand_in": "{what} (tests/fakes)", "kernel": "Add"}}\n'),
        _stub_lib(f"{k}/add/Add_standin.o", what),
        _text(f"content/kernel/config/{chip_dir}/binary_info_config.json", f'{{"stand_in": "{what}"}}\n'),
        *_payload(f"{k}/standin-payload.bin", file, payload_bytes),
        _text("content/opp_kernel/version.info", info),
        # --devel also installs the static libraries
        _stub_lib(f"devel/kernel/{chip_dir}/static/libopkernel_static.a", what),
    ]
    name = "Atlas-A3-cann-kernels" if chip == "A3" else f"Ascend-cann-kernels-{chip}"
    return _Spec(
        "kernels", file, name, "[Kernels]", version, arch, entries, chip=chip, chip_dir=chip_dir, component_version=comp
    )


def _cann_set_env() -> str:
    """cann-<version>/set_env.sh: the variable set and path order of a real 8.5.0 install (see the docstring)."""
    home = "${ASCEND_TOOLKIT_HOME}"
    drv = "/usr/local/Ascend/driver/lib64"
    libs = [
        f"{home}/lib64",
        f"{home}/lib64/plugin/opskernel",
        f"{home}/lib64/plugin/nnengine",
        f"{home}/opp/built-in/op_impl/ai_core/tbe/op_tiling/lib/linux/$(arch)",
        f"{home}/tools/aml/lib64",
        f"{home}/tools/aml/lib64/plugin",
        drv,
        f"{drv}/common",
        f"{drv}/driver",
    ]
    tools = ["ccec_compiler/bin", "profiler/bin", "ascend_system_advisor/asys", "show_kernel_debug_data", "msobjdump"]
    lines = [
        "# Stand-in for CANN's cann-<version>/set_env.sh (CANN 8.5.0 and later), written by a tests/fakes installer",
        "# (not Huawei's). <install-path>/cann/set_env.sh and <install-path>/ascend-toolkit/set_env.sh reach this",
        "# file through symlinks; every variable names the real cann-<version> tree.",
        'export ASCEND_TOOLKIT_HOME="@@CANN_ROOT@@"',
        f"export LD_LIBRARY_PATH={':'.join(libs)}:$LD_LIBRARY_PATH",
        f"export PYTHONPATH={home}/python/site-packages:{home}/opp/built-in/op_impl/ai_core/tbe:$PYTHONPATH",
        f"export PATH={':'.join([f'{home}/bin', *(f'{home}/tools/{t}' for t in tools)])}:$PATH",
        f"export ASCEND_AICPU_PATH={home}",
        f"export ASCEND_OPP_PATH={home}/opp",
        f"export TOOLCHAIN_HOME={home}/toolkit",
        f"export ASCEND_HOME_PATH={home}",
    ]
    return "\n".join(lines) + "\n"


def _cann_toolkit_spec(file: str, version: str, arch: str, comp: str, inner: str, payload_bytes: int) -> _Spec:
    """The 8.5+ toolkit: the tree that installs as <install-path>/cann-<version> (HCCL comes with the ops)."""
    what = f"CANN toolkit {version}"
    plat = f"{arch}-linux"
    components = ["runtime", "compiler", "hccl", "opp", "toolkit", "aoe", "ncs"]
    cfg = ["# version: 1.0"]
    cfg += [f"{c}_running_version=[{comp}:{version}]" for c in components]
    cfg += [f"{c}_upgrade_version=[{comp}:{version}]" for c in components]
    install_info = (
        "package_name=Ascend-cann-toolkit\n"
        f"version={version}\n"
        f"innerversion={inner}\n"
        f"compatible_version={_CANN_COMPATIBLE}\n"
        f"arch={arch}\n"
        "os=linux\n"
        "path=@@CANN_ROOT@@\n"
    )
    pkg_doc = f'"""Stand-in for a Python package of {what} (tests/fakes): empty."""\n'
    c = "content"
    entries = [
        _stub_lib(f"{c}/{plat}/lib64/libascendcl.so", what),
        _stub_lib(f"{c}/{plat}/lib64/libruntime.so", what),
        _stub_lib(f"{c}/{plat}/lib64/plugin/opskernel/libfe.so", what),
        _stub_lib(f"{c}/{plat}/lib64/plugin/nnengine/libnnengine.so", what),
        _text(f"{c}/{plat}/include/acl/acl.h", f"/* stand-in header of {what} (tests/fakes) */\n"),
        _dir(f"{c}/{plat}/bin"),
        _text(f"{c}/{plat}/ccec_compiler/bin/ccec", _ccec(what), 0o755),
        _link(f"{c}/lib64", f"{plat}/lib64"),
        _link(f"{c}/include", f"{plat}/include"),
        _link(f"{c}/bin", f"{plat}/bin"),
        _link(f"{c}/tools/ccec_compiler", f"../{plat}/ccec_compiler"),
        *(_dir(f"{c}/tools/{t}") for t in ("profiler/bin", "ascend_system_advisor/asys")),
        *(_dir(f"{c}/tools/{t}") for t in ("show_kernel_debug_data", "msobjdump")),
        _text(f"{c}/compiler/version.info", _version_info(comp, version)),
        _text(f"{c}/runtime/version.info", _version_info(comp, version)),
        _text(f"{c}/opp/version.info", _version_info(comp, version)),
        _text(f"{c}/toolkit/version.info", _version_info(comp, version)),
        _text(f"{c}/opp/built-in/op_impl/ai_core/tbe/impl/__init__.py", pkg_doc),
        _stub_lib(f"{c}/opp/built-in/op_impl/ai_core/tbe/op_tiling/lib/linux/{arch}/liboptiling.so", what),
        _text(f"{c}/python/site-packages/te/__init__.py", pkg_doc),
        _text(f"{c}/python/site-packages/tbe/__init__.py", pkg_doc),
        _stub_lib(f"{c}/tools/aml/lib64/libaml_stub.so", what),
        _dir(f"{c}/tools/aml/lib64/plugin"),
        _text(f"{c}/version.cfg", "\n".join(cfg) + "\n"),
        *_payload(f"{c}/share/standin-payload.bin", file, payload_bytes),
        _text("templates/set_env.sh", _cann_set_env()),
        _text(f"templates/{plat}/ascend_toolkit_install.info", install_info),
    ]
    return _Spec(
        "cann-toolkit",
        file,
        "Ascend-cann-toolkit",
        "[Toolkit]",
        version,
        arch,
        entries,
        component_version=comp,
        inner_version=inner,
    )


def _ops_spec(file: str, version: str, arch: str, chip: str, comp: str, payload_bytes: int) -> _Spec:
    """The 8.5+ chip package: kernels, and HCCL, into the toolkit's cann-<version> tree."""
    chip_dir = CHIPS[chip][1]
    name = f"Ascend-cann-{chip}-ops"
    what = f"CANN {chip} ops {version}"
    k = f"content/kernel/{chip_dir}"
    info = (
        f"package_name={name}\n"
        f"version={version}\n"
        f"innerversion={_INNER_VERSIONS.get(version) or _invented_inner_version(version)}\n"
        f"arch={arch}\n"
        "os=linux\n"
        "path=@@CANN_ROOT@@\n"
    )
    entries = [
        _text(f"{k}/add/Add_standin.json", f'{{"stand_in": "{what} (tests/fakes)", "kernel": "Add"}}\n'),
        _stub_lib(f"{k}/add/Add_standin.o", what),
        _text(f"content/kernel/config/{chip_dir}/binary_info_config.json", f'{{"stand_in": "{what}"}}\n'),
        *_payload(f"{k}/standin-payload.bin", file, payload_bytes),
        _stub_lib("content/lib64/libhccl.so", what),
        _text("templates/ascend_ops_install.info", info),
        # --devel also installs the static libraries
        _stub_lib(f"devel/kernel/{chip_dir}/static/libopkernel_static.a", what),
    ]
    return _Spec(
        "ops", file, name, "[Ops]", version, arch, entries, chip=chip, chip_dir=chip_dir, component_version=comp
    )


_ATB_ABI_FROM_TORCH = """\
# Stand-in for NNAL's atb/set_env.sh, written by a tests/fakes installer (not Huawei's script).
# ATB_HOME_PATH is the cxx_abi_0 or cxx_abi_1 tree next to this file: --cxx_abi=0|1 chooses, else the ABI
# of the torch that python3 imports, else (torch cannot be imported) 1, as the real script does.
_atb_cxx_abi=""
for _atb_arg in "$@"; do
    case "$_atb_arg" in
        --cxx_abi=0) _atb_cxx_abi=0 ;;
        --cxx_abi=1) _atb_cxx_abi=1 ;;
    esac
done
if [ -z "$_atb_cxx_abi" ]; then
    if ! python3 -c "import torch" >/dev/null 2>&1; then
        _atb_cxx_abi=1
    elif [ "$(python3 -c 'import torch; print(torch.compiled_with_cxx11_abi())' 2>/dev/null)" = "True" ]; then
        _atb_cxx_abi=1
    else
        _atb_cxx_abi=0
    fi
fi
"""

# From CANN 8.5.0 on ATB defaults to cxx_abi_1 (issue 11; the official 8.5.0/9.0.0 images record cxx_abi_1).
_ATB_ABI_DEFAULT_1 = """\
# Stand-in for NNAL's atb/set_env.sh of CANN 8.5.0 and later, written by a tests/fakes installer (not Huawei's
# script). ATB_HOME_PATH is the cxx_abi_0 or cxx_abi_1 tree next to this file: --cxx_abi=0|1 chooses, else 1,
# the default of these releases (torch is not asked).
_atb_cxx_abi=1
for _atb_arg in "$@"; do
    case "$_atb_arg" in
        --cxx_abi=0) _atb_cxx_abi=0 ;;
        --cxx_abi=1) _atb_cxx_abi=1 ;;
    esac
done
"""

_ATB_ENV = """\
_atb_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export ATB_HOME_PATH="${_atb_dir}/cxx_abi_${_atb_cxx_abi}"
export LD_LIBRARY_PATH=$ATB_HOME_PATH/lib:$ATB_HOME_PATH/examples:$ATB_HOME_PATH/tests/atbopstest:$LD_LIBRARY_PATH
export PATH=$ATB_HOME_PATH/bin:$PATH
export ATB_STREAM_SYNC_EVERY_KERNEL_ENABLE=0
export ATB_STREAM_SYNC_EVERY_RUNNER_ENABLE=0
export ATB_STREAM_SYNC_EVERY_OPERATION_ENABLE=0
export ATB_OPSRUNNER_KERNEL_CACHE_LOCAL_COUNT=1
export ATB_OPSRUNNER_KERNEL_CACHE_GLOABL_COUNT=5
export ATB_WORKSPACE_MEM_ALLOC_ALG_TYPE=1
export ATB_COMPARE_TILING_EVERY_KERNEL=0
export ATB_SHARE_MEMORY_NAME_SUFFIX=""
export ATB_MATMUL_SHUFFLE_K_ENABLE=1
export LCCL_DETERMINISTIC=0
export LCCL_PARALLEL=0
unset _atb_cxx_abi _atb_arg _atb_dir
"""

_NNAL_TOP_SET_ENV = """\
# Stand-in for NNAL's nnal/atb/set_env.sh, written by a tests/fakes installer (not Huawei's script).
# Sources the installed version's atb/set_env.sh with the same arguments (e.g. --cxx_abi=0).
_nnal_atb_root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "${_nnal_atb_root}/latest/atb/set_env.sh" "$@"
unset _nnal_atb_root
"""


def _nnal_spec(file: str, version: str, arch: str, payload_bytes: int) -> _Spec:
    what = f"CANN NNAL (ATB) {version}"
    atb_abi = _ATB_ABI_DEFAULT_1 if uses_cann_layout(version) else _ATB_ABI_FROM_TORCH
    entries = [
        _text("content/version.info", f"Ascend-cann-atb : {version}\nPlatform : {arch}\n"),
        _text("content/atb/set_env.sh", atb_abi + _ATB_ENV),
        *_payload("content/atb/standin-payload.bin", file, payload_bytes),
        _text("extra/set_env.sh", _NNAL_TOP_SET_ENV),
    ]
    for abi in (0, 1):
        t = f"content/atb/cxx_abi_{abi}"
        entries += [
            _stub_lib(f"{t}/lib/libatb.so", f"{what}, cxx_abi_{abi}"),
            _text(f"{t}/include/atb/atb_infer.h", f"/* stand-in header of {what} (tests/fakes) */\n"),
            _dir(f"{t}/bin"),
            _dir(f"{t}/examples"),
            _dir(f"{t}/tests/atbopstest"),
        ]
    return _Spec("nnal", file, "Ascend-cann-nnal", "[NNAL]", version, arch, entries)


# --------------------------------------------------------------------------------------------------------
# the installer script (bash). Placeholders are @@NAME@@; the archive starts on the line after the marker.

_MARKER = "__STANDIN_ARCHIVE_BELOW__"

_HEADER = r"""#!/bin/bash
# @@FILE@@
# STAND-IN, generated by ascend-llm-stack's tests/fakes/cann.py: this is NOT Huawei's CANN installer.
# It imitates the real installer's options, checks and installed layout so that offline tests can build
# images. makeself-style: this shell header, then (from line @@SKIP@@ on) an uncompressed tar archive.
set -o pipefail
pkg_kind=@@KIND@@
pkg_name=@@PKG_NAME@@
pkg_file=@@FILE_Q@@
label=@@LABEL@@
pkg_version=@@VERSION@@
pkg_arch=@@ARCH@@
pkg_chip_dir=@@CHIP_DIR@@
component_version=@@COMPONENT_VERSION@@
archive_skip=@@SKIP@@
archive_sha256=@@SHA256@@

log() { printf '%s [INFO]: %s\n' "$label" "$*"; }
err() { printf '%s [ERROR]: %s\n' "$label" "$*" >&2; }

usage() {
    cat <<EOF
Usage: $0 [options]
Options:
  --help | -h                  Print this message
  --info                       Print embedded info: title, version, architecture
  --list                       Print the list of files in the archive
  --check                      Check the integrity (SHA256) of the archive
  --quiet | -q                 Quiet install mode, skip human-computer interactions (accepts the EULA)
  --noexec                     Do not run the embedded installer (use with --extract)
  --extract=<path>             Extract the archive to <path>
  --install                    Install the package
  --install-path=<path>        Install under <path> (default /usr/local/Ascend for root, \$HOME/Ascend else)
  --install-for-all            Give other users the install group's permissions (with an install operation)
  --upgrade                    Upgrade the installed package
  --uninstall                  Uninstall the package
@@EXTRA_HELP@@EOF
}

action=""
quiet=n
for_all=n
install_path=""
path_given=n
do_check=n
noexec=n
extract_dir=""
tmpdir=""

want_action() {
    if [ -n "$action" ] && [ "$action" != "$1" ]; then
        err "only one operation can be given (--$action and --$1)"
        usage >&2
        exit 1
    fi
    action=$1
}

cleanup() {
    if [ -n "$tmpdir" ]; then rm -rf "$tmpdir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

verify() {
    local sum
    sum=$(tail -n +"$archive_skip" -- "$0" | sha256sum | cut -d' ' -f1) || return 2
    if [ "$sum" != "$archive_sha256" ]; then
        err "Error in SHA256 checksums: $sum is different from $archive_sha256"
        return 2
    fi
    if [ "$quiet" = n ]; then echo "Verifying archive integrity... SHA256 checksums are OK. All good."; fi
}

extract_to() {
    if ! tail -n +"$archive_skip" -- "$0" | tar -xf - -C "$1" --no-same-owner; then
        err "Unable to decompress $0"
        exit 1
    fi
}

extract_tmp() {
    tmpdir=$(mktemp -d "${TMPDIR:-/tmp}/selfgz.XXXXXXXXXX") || { err "cannot create a temporary directory"; exit 1; }
    extract_to "$tmpdir"
}

show_info() {
    echo "Identification: $pkg_name $pkg_version for $pkg_arch (stand-in from tests/fakes, not Huawei's package)"
    echo "File: $pkg_file"
    echo "Built with: ascend-llm-stack tests/fakes/cann.py (makeself-style, no compression)"
}

eula() {
    local answer="" verb
    if [ "$quiet" = y ]; then return 0; fi
    echo "End User License Agreement of $pkg_name (stand-in text: this package is a test fixture)."
    verb=install
    if [ "$action" = upgrade ]; then verb=upgrade; fi
    printf 'Do you accept the EULA to %s %s? [y/n] ' "$verb" "$pkg_name"
    read -r answer || answer=""
    if [ ! -t 0 ]; then echo; fi
    case "$answer" in
        y|Y) return 0 ;;
    esac
    echo
    err "The EULA was not accepted: the $verb of $pkg_name is cancelled."
    exit 1
}

default_path() {
    if [ "$(id -u)" -eq 0 ]; then echo /usr/local/Ascend; else echo "$HOME/Ascend"; fi
}

global_info_file() {
    if [ "$(id -u)" -eq 0 ]; then echo /etc/Ascend/ascend_cann_install.info
    else echo "$HOME/Ascend/ascend_cann_install.info"; fi
}

seclog_dir() {
    if [ "$(id -u)" -eq 0 ]; then echo /var/log/ascend_seclog; else echo "$HOME/var/log/ascend_seclog"; fi
}

resolve_install_path() {
    local info recorded
    if [ "$path_given" = y ]; then
        if [ -z "$install_path" ]; then err "--install-path needs a value: --install-path=<path>"; exit 1; fi
        case "$install_path" in /*) ;; *) install_path="$PWD/$install_path" ;; esac
    else
        install_path=$(default_path)
        info=$(global_info_file)
        if [ -f "$info" ]; then
            recorded=$(sed -n 's/^Install_Path=//p' "$info" | head -n 1)
            if [ -n "$recorded" ]; then install_path=$recorded; fi
        fi
    fi
    while [ "${#install_path}" -gt 1 ] && [ "${install_path%/}" != "$install_path" ]; do
        install_path=${install_path%/}
    done
    if ! [[ "$install_path" =~ ^/[A-Za-z0-9_./+-]*$ ]]; then
        err "The install path $install_path contains illegal characters."
        exit 1
    fi
    if [ "$install_path" = "$(default_path)" ]; then records=y; else records=n; fi
}

record() {
    # The real installer keeps global records; the stand-in writes them only for the default install path.
    local dir
    if [ "$records" != y ]; then return 0; fi
    dir=$(seclog_dir)
    mkdir -p "$dir" && echo "$(date '+%Y-%m-%d %H:%M:%S') $pkg_file $1 success" >>"$dir/operation.log"
}

set_perms() {
    # 755/644 with --install-for-all, else others get nothing (750/640), like the real installer.
    local p
    for p in "$@"; do
        [ -e "$p" ] || continue
        chmod -R u+rwX,g+rX,g-w "$p" || return 1
        if [ "$for_all" = y ]; then chmod -R o+rX,o-w "$p" || return 1; else chmod -R o-rwx "$p" || return 1; fi
    done
}

fill() {
    # fill TEMPLATE PLACEHOLDER VALUE: print the template with every placeholder replaced.
    local text
    text=$(cat "$1") || return 1
    printf '%s\n' "${text//"$2"/"$3"}"
}

check_arch() {
    local machine
    machine=$(uname -m)
    if [ "$machine" != "$pkg_arch" ]; then
        err "The architecture of the package ($pkg_arch) does not match the system ($machine)."
        exit 1
    fi
}

fail_install() {
    err "$pkg_name $action failed: $1"
    exit 1
}

@@KIND_FUNCTIONS@@

main() {
    while [ $# -gt 0 ]; do
        case "$1" in
            -h|--help) usage; exit 0 ;;
            -q|--quiet) quiet=y ;;
            --info) show_info; exit 0 ;;
            --list) tail -n +"$archive_skip" -- "$0" | tar -tf -; exit $? ;;
            --check) do_check=y ;;
            --noexec) noexec=y ;;
            --extract=*) extract_dir=${1#*=} ;;
            --nox11|--force) ;;
            --install) want_action install ;;
            --upgrade) want_action upgrade ;;
            --uninstall) want_action uninstall ;;
            --install-for-all) for_all=y ;;
            --install-path=*) install_path=${1#*=}; path_given=y ;;
@@EXTRA_CASES@@            *) usage >&2; exit 1 ;;
        esac
        shift
    done
    if [ "$noexec" = y ] || [ -n "$extract_dir" ]; then
        if [ "$noexec" != y ] || [ -z "$extract_dir" ] || [ -n "$action" ]; then usage >&2; exit 1; fi
        if [ "$do_check" = y ]; then verify || exit 1; fi
        mkdir -p "$extract_dir" || exit 1
        extract_to "$extract_dir"
        exit 0
    fi
    if [ -z "$action" ]; then
        if [ "$do_check" = y ]; then
            verify || exit 1
            log "The integrity of $pkg_file is checked."
            exit 0
        fi
        usage >&2
        exit 1
    fi
    if [ "$for_all" = y ] && [ "$action" = uninstall ]; then
        err "--install-for-all must be used with --install@@FOR_ALL_ACTIONS@@ or --upgrade."
        exit 1
    fi
    if [ "$do_check" = y ]; then verify || exit 1; fi
    resolve_install_path
    if [ "$action" = uninstall ]; then
        uninstall_pkg
        record uninstall
        log "$pkg_name uninstall success, the install path is $install_path."
        exit 0
    fi
    check_arch
    pre_install_checks
    eula
    if [ "${SETUP_NOCHECK:-}" != 1 ] && [ "$do_check" != y ]; then (quiet=y; verify) || exit 1; fi
    extract_tmp
    install_pkg
    record "$action"
    log "$pkg_name install success, the install path is $install_path."
    exit 0
}

main "$@"
exit $?
"""

_TOOLKIT_FUNCTIONS = r"""
toolkit_root() { echo "$install_path/ascend-toolkit"; }

pre_install_checks() {
    if [ "$action" = upgrade ] && [ ! -e "$(toolkit_root)/latest" ]; then
        err "$pkg_name is not installed in $(toolkit_root): nothing to upgrade."
        exit 1
    fi
}

install_pkg() {
    local root vdir plat
    root=$(toolkit_root)
    vdir="$root/$pkg_version"
    plat="$pkg_arch-linux"
    mkdir -p "$vdir" || fail_install "cannot create $vdir"
    cp -a --remove-destination "$tmpdir/content/." "$vdir/" || fail_install "cannot copy files to $vdir"
    ln -sfn "$pkg_version" "$root/latest" || fail_install "cannot link $root/latest"
    fill "$tmpdir/templates/set_env.sh" @@TOOLKIT_ROOT@@ "$root" >"$root/set_env.sh" \
        || fail_install "cannot write $root/set_env.sh"
    fill "$tmpdir/templates/$plat/ascend_toolkit_install.info" @@TOOLKIT_ROOT@@ "$root" \
        >"$vdir/$plat/ascend_toolkit_install.info" || fail_install "cannot write the install info"
    set_perms "$root" || fail_install "cannot set permissions"
    if [ "$records" = y ]; then
        mkdir -p "$(dirname "$(global_info_file)")" \
            && printf 'Install_Path=%s\n' "$install_path" >"$(global_info_file)" \
            || fail_install "cannot write $(global_info_file)"
    fi
}

uninstall_pkg() {
    local root vdir
    root=$(toolkit_root)
    vdir="$root/$pkg_version"
    if [ ! -f "$vdir/$pkg_arch-linux/ascend_toolkit_install.info" ]; then
        err "$pkg_name $pkg_version is not installed in $root."
        exit 1
    fi
    rm -rf "$vdir"
    if [ "$(readlink "$root/latest")" = "$pkg_version" ]; then rm -f "$root/latest"; fi
    if [ -z "$(find "$root" -mindepth 1 -maxdepth 1 ! -name set_env.sh ! -name latest -print -quit)" ]; then
        rm -f "$root/set_env.sh" "$root/latest"
        rmdir "$root" 2>/dev/null
        if [ "$records" = y ]; then rm -f "$(global_info_file)"; fi
    fi
    return 0
}
"""

_KERNELS_FUNCTIONS = r"""
toolkit_dir() { echo "$install_path/ascend-toolkit/$pkg_version"; }
kernel_dir() { echo "$(toolkit_dir)/opp/built-in/op_impl/ai_core/tbe/kernel"; }

pre_install_checks() {
    if [ ! -f "$(toolkit_dir)/$pkg_arch-linux/ascend_toolkit_install.info" ]; then
        err "Ascend-cann-toolkit $pkg_version is not installed in $install_path/ascend-toolkit:" \
            "install the toolkit first (toolkit -> kernels -> nnal)."
        exit 1
    fi
    if [ "$action" = upgrade ] && [ ! -d "$(kernel_dir)/$pkg_chip_dir" ]; then
        err "$pkg_name is not installed in $(toolkit_dir): nothing to upgrade."
        exit 1
    fi
}

set_version_cfg() {
    # set_version_cfg add|remove: the opp_kernel lines of version.cfg
    local cfg="$(toolkit_dir)/version.cfg"
    [ -f "$cfg" ] || return 0
    grep -v '^opp_kernel_' "$cfg" >"$cfg.new"
    if [ "$1" = add ]; then
        printf 'opp_kernel_running_version=[%s:%s]\n' "$component_version" "$pkg_version" >>"$cfg.new"
        printf 'opp_kernel_upgrade_version=[%s:%s]\n' "$component_version" "$pkg_version" >>"$cfg.new"
    fi
    cat "$cfg.new" >"$cfg" && rm -f "$cfg.new"
}

install_pkg() {
    local tk kdir
    tk=$(toolkit_dir)
    kdir=$(kernel_dir)
    mkdir -p "$kdir" "$tk/opp_kernel" || fail_install "cannot create $kdir"
    cp -a "$tmpdir/content/kernel/." "$kdir/" || fail_install "cannot copy the kernels to $kdir"
    if [ "$action" = devel ]; then
        cp -a "$tmpdir/devel/kernel/." "$kdir/" || fail_install "cannot copy the static libraries"
    fi
    cp -a "$tmpdir/content/opp_kernel/." "$tk/opp_kernel/" || fail_install "cannot write $tk/opp_kernel"
    set_version_cfg add || fail_install "cannot update $tk/version.cfg"
    set_perms "$kdir" "$tk/opp_kernel" || fail_install "cannot set permissions"
}

uninstall_pkg() {
    local tk kdir
    tk=$(toolkit_dir)
    kdir=$(kernel_dir)
    if [ ! -d "$kdir/$pkg_chip_dir" ]; then
        err "$pkg_name $pkg_version is not installed in $tk."
        exit 1
    fi
    rm -rf "${kdir:?}/$pkg_chip_dir" "${kdir:?}/config/$pkg_chip_dir"
    rmdir "$kdir/config" 2>/dev/null
    if [ -z "$(find "$kdir" -mindepth 1 -maxdepth 1 -print -quit)" ]; then
        rmdir "$kdir"
        rm -rf "$tk/opp_kernel"
        set_version_cfg remove
    fi
    return 0
}
"""

_NNAL_FUNCTIONS = r"""
atb_root() { echo "$install_path/nnal/atb"; }

pre_install_checks() {
    if [ -z "${ASCEND_TOOLKIT_HOME:-}" ] || [ ! -d "${ASCEND_TOOLKIT_HOME}" ]; then
        err "The CANN toolkit environment is not set (ASCEND_TOOLKIT_HOME). Run" \
            "'source <install-path>/ascend-toolkit/set_env.sh' before installing $pkg_name."
        exit 1
    fi
    if [ "$action" = upgrade ] && [ ! -e "$(atb_root)/latest" ]; then
        err "$pkg_name is not installed in $(atb_root): nothing to upgrade."
        exit 1
    fi
}

install_pkg() {
    local root vdir
    root=$(atb_root)
    vdir="$root/$pkg_version"
    mkdir -p "$vdir" || fail_install "cannot create $vdir"
    cp -a --remove-destination "$tmpdir/content/." "$vdir/" || fail_install "cannot copy files to $vdir"
    ln -sfn "$pkg_version" "$root/latest" || fail_install "cannot link $root/latest"
    cp "$tmpdir/extra/set_env.sh" "$root/set_env.sh" || fail_install "cannot write $root/set_env.sh"
    set_perms "$install_path/nnal" || fail_install "cannot set permissions"
}

uninstall_pkg() {
    local root
    root=$(atb_root)
    if [ ! -f "$root/$pkg_version/version.info" ]; then
        err "$pkg_name $pkg_version is not installed in $root."
        exit 1
    fi
    rm -rf "${root:?}/$pkg_version"
    if [ "$(readlink "$root/latest")" = "$pkg_version" ]; then rm -f "$root/latest"; fi
    if [ -z "$(find "$root" -mindepth 1 -maxdepth 1 ! -name set_env.sh ! -name latest -print -quit)" ]; then
        rm -f "$root/set_env.sh" "$root/latest"
        rmdir "$root" "$install_path/nnal" 2>/dev/null
    fi
    return 0
}
"""

_CANN_TOOLKIT_FUNCTIONS = r"""
cann_root() { echo "$install_path/cann-$pkg_version"; }

earlier_layout_toolkits() {
    # Versions installed in the ascend-toolkit/<version> layout of the releases before 8.5.0.
    local d name out=""
    for d in "$install_path"/ascend-toolkit/*/; do
        name=${d%/}
        name=${name##*/}
        if [ "$name" != latest ] && ls "$d"*-linux/ascend_toolkit_install.info >/dev/null 2>&1; then
            out="$out${out:+, }$name"
        fi
    done
    echo "$out"
}

pre_install_checks() {
    local earlier
    earlier=$(earlier_layout_toolkits)
    if [ -n "$earlier" ]; then
        err "Ascend-cann-toolkit $earlier (the ascend-toolkit/<version> layout) is installed in $install_path:" \
            "uninstall it before installing $pkg_version there."
        exit 1
    fi
    if [ "$action" = upgrade ] && [ ! -e "$install_path/cann" ]; then
        err "$pkg_name is not installed in $install_path/cann: nothing to upgrade."
        exit 1
    fi
}

install_pkg() {
    local root plat compat
    root=$(cann_root)
    plat="$pkg_arch-linux"
    compat="$install_path/ascend-toolkit"
    mkdir -p "$root" "$compat" || fail_install "cannot create $root"
    cp -a --remove-destination "$tmpdir/content/." "$root/" || fail_install "cannot copy files to $root"
    fill "$tmpdir/templates/set_env.sh" @@CANN_ROOT@@ "$root" >"$root/set_env.sh" \
        || fail_install "cannot write $root/set_env.sh"
    fill "$tmpdir/templates/$plat/ascend_toolkit_install.info" @@CANN_ROOT@@ "$root" \
        >"$root/$plat/ascend_toolkit_install.info" || fail_install "cannot write the install info"
    # Absolute links, as the real installer writes them: cann -> cann-<version>, and the compatibility
    # paths ascend-toolkit/latest -> cann, ascend-toolkit/set_env.sh -> ascend-toolkit/latest/set_env.sh.
    ln -sfn "$root" "$install_path/cann" || fail_install "cannot link $install_path/cann"
    ln -sfn "$install_path/cann" "$compat/latest" || fail_install "cannot link $compat/latest"
    ln -sfn "$compat/latest/set_env.sh" "$compat/set_env.sh" || fail_install "cannot link $compat/set_env.sh"
    set_perms "$root" "$compat" || fail_install "cannot set permissions"
    if [ "$records" = y ]; then
        mkdir -p "$(dirname "$(global_info_file)")" \
            && printf 'Install_Path=%s\n' "$install_path" >"$(global_info_file)" \
            || fail_install "cannot write $(global_info_file)"
    fi
}

uninstall_pkg() {
    local root compat
    root=$(cann_root)
    compat="$install_path/ascend-toolkit"
    if [ ! -f "$root/$pkg_arch-linux/ascend_toolkit_install.info" ]; then
        err "$pkg_name $pkg_version is not installed in $install_path."
        exit 1
    fi
    rm -rf "$root"
    if [ "$(readlink "$install_path/cann")" = "$root" ]; then
        rm -f "$install_path/cann" "$compat/latest" "$compat/set_env.sh"
        rmdir "$compat" 2>/dev/null
    fi
    if [ "$records" = y ] && ! ls -d "$install_path"/cann-* >/dev/null 2>&1; then rm -f "$(global_info_file)"; fi
    return 0
}
"""

_OPS_FUNCTIONS = r"""
cann_root() { echo "$install_path/cann-$pkg_version"; }
kernel_dir() { echo "$(cann_root)/opp/built-in/op_impl/ai_core/tbe/kernel"; }
ops_info() { echo "$(cann_root)/$pkg_arch-linux/ascend_ops_install.info"; }

found_toolkits() {
    local d out=""
    for d in "$install_path"/cann-*/; do
        if [ -f "$d$pkg_arch-linux/ascend_toolkit_install.info" ]; then
            d=${d%/}
            out="$out${out:+, }${d##*/}"
        fi
    done
    echo "$out"
}

pre_install_checks() {
    local found other
    if [ ! -f "$(cann_root)/$pkg_arch-linux/ascend_toolkit_install.info" ]; then
        found=$(found_toolkits)
        err "Ascend-cann-toolkit $pkg_version is not installed in $install_path${found:+ (found: $found)}:" \
            "install the toolkit of the same version to the same path first (toolkit -> ops -> nnal)."
        exit 1
    fi
    if [ -f "$(ops_info)" ]; then
        other=$(sed -n 's/^package_name=//p' "$(ops_info)" | head -n 1)
        if [ "$other" != "$pkg_name" ]; then
            err "$other is installed in $(cann_root): one install path takes the ops package of one chip." \
                "Install the toolkit and $pkg_name to another --install-path."
            exit 1
        fi
    elif [ "$action" = upgrade ]; then
        err "$pkg_name is not installed in $(cann_root): nothing to upgrade."
        exit 1
    fi
}

install_pkg() {
    local root kdir
    root=$(cann_root)
    kdir=$(kernel_dir)
    mkdir -p "$kdir" || fail_install "cannot create $kdir"
    cp -a "$tmpdir/content/kernel/." "$kdir/" || fail_install "cannot copy the kernels to $kdir"
    if [ "$action" = devel ]; then
        cp -a "$tmpdir/devel/kernel/." "$kdir/" || fail_install "cannot copy the static libraries"
    fi
    cp -a "$tmpdir/content/lib64/." "$root/$pkg_arch-linux/lib64/" || fail_install "cannot copy the libraries"
    fill "$tmpdir/templates/ascend_ops_install.info" @@CANN_ROOT@@ "$root" >"$(ops_info)" \
        || fail_install "cannot write $(ops_info)"
    set_perms "$kdir" "$root/$pkg_arch-linux/lib64/libhccl.so" "$(ops_info)" || fail_install "cannot set permissions"
}

uninstall_pkg() {
    local root kdir other=""
    root=$(cann_root)
    kdir=$(kernel_dir)
    if [ -f "$(ops_info)" ]; then other=$(sed -n 's/^package_name=//p' "$(ops_info)" | head -n 1); fi
    if [ "$other" != "$pkg_name" ]; then
        err "$pkg_name $pkg_version is not installed in $root."
        exit 1
    fi
    rm -rf "${kdir:?}/$pkg_chip_dir" "${kdir:?}/config/$pkg_chip_dir"
    rmdir "$kdir/config" 2>/dev/null
    if [ -z "$(find "$kdir" -mindepth 1 -maxdepth 1 -print -quit)" ]; then rmdir "$kdir"; fi
    rm -f "$root/$pkg_arch-linux/lib64/libhccl.so" "$(ops_info)"
    return 0
}
"""

_FULL_HELP = "  --full                       Full install (no-driver scenario)\n"
_DEVEL_HELP = "  --devel                      Development-mode install\n"
_KERNELS_DEVEL_HELP = "  --devel                      Development-mode install, with the static libraries\n"
_FULL_CASE = "            --full) want_action full ;;\n"
_DEVEL_CASE = "            --devel) want_action devel ;;\n"


def _header(spec: _Spec, skip: int, sha256: str) -> str:
    toolkit = (_FULL_HELP + _DEVEL_HELP, _FULL_CASE + _DEVEL_CASE, ", --full, --devel")
    chip = (_KERNELS_DEVEL_HELP, _DEVEL_CASE, ", --devel")
    functions, (help_, cases, for_all) = {
        "toolkit": (_TOOLKIT_FUNCTIONS, toolkit),
        "cann-toolkit": (_CANN_TOOLKIT_FUNCTIONS, toolkit),
        "kernels": (_KERNELS_FUNCTIONS, chip),
        "ops": (_OPS_FUNCTIONS, chip),
        "nnal": (_NNAL_FUNCTIONS, ("", "", "")),
    }[spec.kind]
    q = shlex.quote
    values = {
        "@@KIND_FUNCTIONS@@": functions.strip("\n"),
        "@@EXTRA_HELP@@": help_,
        "@@EXTRA_CASES@@": cases,
        "@@FOR_ALL_ACTIONS@@": for_all,
        "@@FILE_Q@@": q(spec.file),
        "@@FILE@@": spec.file,
        "@@KIND@@": spec.kind,
        "@@PKG_NAME@@": q(spec.pkg_name),
        "@@LABEL@@": q(spec.label),
        "@@VERSION@@": q(spec.version),
        "@@ARCH@@": spec.arch,
        "@@CHIP_DIR@@": q(spec.chip_dir),
        "@@COMPONENT_VERSION@@": q(spec.component_version),
        "@@SKIP@@": str(skip),
        "@@SHA256@@": sha256,
    }
    text = _HEADER
    for key, value in values.items():
        text = text.replace(key, value)
    return text + _MARKER + "\n"


# --------------------------------------------------------------------------------------------------------
# writing the .run file


class _Incompressible(io.RawIOBase):
    """``size`` deterministic pseudo-random bytes (SHAKE-256 in counter mode), read in any chunk sizes."""

    def __init__(self, seed: bytes, size: int) -> None:
        self._seed = hashlib.sha256(b"tests/fakes payload\0" + seed).digest()
        self._left = size
        self._counter = 0
        self._buf = b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._left
        n = min(n, self._left)
        parts, have = [self._buf], len(self._buf)
        while have < n:
            block = hashlib.shake_256(self._seed + self._counter.to_bytes(8, "big")).digest(_CHUNK)
            self._counter += 1
            parts.append(block)
            have += len(block)
        data = b"".join(parts)
        self._buf = data[n:]
        self._left -= n
        return data[:n]


class _HashingWriter:
    def __init__(self, fileobj: io.BufferedWriter) -> None:
        self._f = fileobj
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self._f.write(data)


def _members(entries: Iterable[_Entry]) -> list[tuple[tarfile.TarInfo, io.RawIOBase | None]]:
    by_path: dict[str, _Entry] = {}
    for e in entries:
        parts = e.path.split("/")
        for i in range(1, len(parts)):
            by_path.setdefault("/".join(parts[:i]), _dir("/".join(parts[:i])))
        by_path[e.path] = e
    members: list[tuple[tarfile.TarInfo, io.RawIOBase | None]] = []
    for path in sorted(by_path):
        e = by_path[path]
        info = tarfile.TarInfo(path)
        info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = _MTIME, 0, 0, "root", "root", e.mode
        data: io.RawIOBase | None = None
        if e.kind == "link":
            info.type, info.linkname = tarfile.SYMTYPE, e.link
        elif e.kind == "dir":
            info.type = tarfile.DIRTYPE
        elif e.payload is not None:
            info.size = e.payload[1]
            data = _Incompressible(*e.payload)
        else:
            info.size = len(e.data)
            data = io.BytesIO(e.data)
        members.append((info, data))
    return members


def _write_run(path: Path, spec: _Spec) -> Path:
    first = _header(spec, 0, _SHA_PLACEHOLDER)
    skip = first.count("\n") + 1
    header = _header(spec, skip, _SHA_PLACEHOLDER).encode()
    sha_at = header.index(f"archive_sha256={_SHA_PLACEHOLDER}".encode()) + len("archive_sha256=")
    with open(path, "wb") as f:
        f.write(header)
        writer = _HashingWriter(f)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.GNU_FORMAT, copybufsize=_CHUNK) as tar:
            for info, data in _members(spec.entries):
                tar.addfile(info, data)
        f.seek(sha_at)
        f.write(writer.sha.hexdigest().encode())
    path.chmod(0o755)
    return path

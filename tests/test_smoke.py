"""The CPU smoke tier: torch_npu, torchair and datasets load in the integration image as a stage loads them.

The smoke image (tests/smoke.py) is the chain's runtime image plus CANN runtime stand-ins generated
from its own torch_npu (tests/fakes/cann_runtime.py). One probe runs in it from a launch script that
ascend-llm composes as for every stage, with the image's CANN environment; the tests read its report.
The generator's helpers are tested without Docker at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chain import Chain
from fakes import cann_runtime
from smoke import STANDIN_DIR, build_smoke_image, remove_smoke_image, run_python_as_stage

PROBE = (
    f'STAND_INS = "{STANDIN_DIR}/stand-ins.json"\n'
    + r"""
import json, os
report = {"env": {k: os.environ.get(k) for k in ("LD_LIBRARY_PATH", "PYTHONPATH", "ASCEND_TOOLKIT_HOME")}}
report["ld_library_path_real"] = [os.path.realpath(d) for d in os.environ["LD_LIBRARY_PATH"].split(":") if d]
import torch, torch_npu
report["is_available"] = torch_npu.npu.is_available()
report["device_count"] = torch_npu.npu.device_count()
from torchair.core import _npu_graph_executor, _npu_utils, _torchair  # torchair's extension modules
report["torchair"] = sorted(os.path.basename(m.__file__) for m in (_npu_graph_executor, _npu_utils, _torchair))
with open("/proc/self/maps") as maps:
    report["cann_loaded"] = sorted({l.split()[-1] for l in maps if " /usr/local/Ascend/" in l})
import acl
report["acl"] = os.path.realpath(acl.__file__)
with open(STAND_INS) as handle:
    report["generated"] = json.load(handle)
try:
    import datasets, numpy, pyarrow
    report["datasets"] = [datasets.__version__, pyarrow.__version__, numpy.__version__]
except Exception as exc:
    report["datasets"] = f"{type(exc).__name__}: {exc}"
print("SMOKE-REPORT " + json.dumps(report))
"""
)


@pytest.fixture(scope="module")
def smoke_image(chain: Chain, docker_client: Any) -> Iterator[str]:
    tag = build_smoke_image(docker_client, chain.image)
    try:
        yield tag
    finally:
        remove_smoke_image(docker_client, tag)


@pytest.fixture(scope="module")
def probe(smoke_image: str, docker_client: Any) -> dict[str, Any]:
    run = run_python_as_stage(docker_client, smoke_image, PROBE)
    assert run.exit_code == 0, run.output[-3000:]
    line = next((x for x in run.output.splitlines() if x.startswith("SMOKE-REPORT ")), None)
    assert line, run.output[-3000:]
    return json.loads(line.split(" ", 1)[1])


@pytest.fixture(scope="module")
def generated(probe: dict[str, Any]) -> dict[str, Any]:
    """What the generator wrote (its stand-ins.json in the image)."""
    return probe["generated"]


def image_env(docker_client: Any, image: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in docker_client.images.get(image).attrs["Config"]["Env"])
    return dict(pairs)  # type: ignore[arg-type]


@pytest.mark.docker
def test_torch_npu_imports_on_the_cpu_and_sees_no_device(probe: dict[str, Any]) -> None:
    assert (probe["is_available"], probe["device_count"]) == (False, 0)


@pytest.mark.docker
def test_torchair_extension_modules_load(probe: dict[str, Any]) -> None:
    assert probe["torchair"] == ["_npu_graph_executor.so", "_npu_utils.so", "_torchair.so"]


@pytest.mark.docker
def test_the_stage_loads_the_stand_ins_through_the_images_own_cann_environment(
    probe: dict[str, Any], generated: dict[str, Any], chain: Chain, docker_client: Any
) -> None:
    env = image_env(docker_client, chain.image)
    assert probe["env"] == {k: env.get(k) for k in probe["env"]}, "the stage did not run with the image's CANN env"
    loaded = {os.path.basename(p): p for p in probe["cann_loaded"]}
    search = set(probe["ld_library_path_real"])
    assert {"libascendcl.so", "libhccl.so", "libge_runner.so", "libgraph.so"} <= set(loaded), loaded
    stand_ins = {name: lib["path"] for name, lib in generated["libraries"].items()}
    for name, path in loaded.items():
        assert stand_ins.get(name) == path, f"{path} is not the stand-in the generator wrote"
        assert os.path.dirname(path) in search, f"{path} is not in a directory of the image's LD_LIBRARY_PATH"
    assert probe["acl"] == generated["acl_module"] and probe["acl"].endswith("/python/site-packages/acl.py")


@pytest.mark.docker
def test_every_library_torch_npu_cannot_load_got_a_stand_in(generated: dict[str, Any]) -> None:
    libraries = generated["libraries"]
    assert {"libascendcl.so", "libhccl.so", "libatb.so"} <= set(libraries)
    assert {lib["was"] for lib in libraries.values()} <= {"missing", "not-elf"}
    kinds = generated["symbols"]
    assert kinds["aclrtGetDeviceCount"] == "modelled" and kinds["aclrtGetSocName"] == "string"
    assert kinds["aclInit"] == "0"


@pytest.mark.docker
def test_datasets_imports_with_a_pyarrow_that_takes_the_rows_numpy(probe: dict[str, Any]) -> None:
    assert isinstance(probe["datasets"], list), f"import datasets failed in the image: {probe['datasets']}"
    numpy_major = int(probe["datasets"][2].split(".")[0])
    assert numpy_major < 2  # the row pins numpy<2 (CANN); pyarrow 26.0.0 and later refuse it at import


# --------------------------------------------------------------------------------------------------------
# the generator's helpers, without Docker


@pytest.mark.parametrize(
    ("name", "pretty", "getter"),
    [
        ("aclGetRecentErrMsg", "aclGetRecentErrMsg", True),
        ("aclrtGetSocName", "aclrtGetSocName", True),
        ("_ZNK2ge12AscendString9GetStringEv", "ge::AscendString::GetString() const", True),
        ("_ZN2ge13GetFormatNameENS_6FormatE", "ge::GetFormatName(ge::Format)", True),
        ("aclrtGetDeviceCount", "aclrtGetDeviceCount", False),
        ("aclSetTensorDescName", "aclSetTensorDescName", False),
        ("_ZNK2ge5GNode7GetTypeERNS_12AscendStringE", "ge::GNode::GetType(ge::AscendString&) const", False),
        ("_ZN3atb15CreateOperationINS_5infer11LinearParamEEEiRKT_PPNS_9OperationE",
         "int atb::CreateOperation<atb::infer::LinearParam>(atb::infer::LinearParam const&, atb::Operation**)", False),
    ],
)  # fmt: skip
def test_string_getters_are_found_by_name(name: str, pretty: str, getter: bool) -> None:
    assert cann_runtime.is_string_getter(name, pretty) is getter


def elf_of(tmp_path: Path, name: str, elf_class: int) -> Path:
    """A file with just an ELF header's identifying bytes (class, x86-64 machine)."""
    path = tmp_path / name
    path.write_bytes(b"\x7fELF" + bytes([elf_class]) + b"\x01\x01" + b"\0" * 11 + b"\x3e\x00" + b"\0" * 44)
    return path


def test_the_loader_search_stops_at_a_non_elf_file_and_skips_another_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, third = (tmp_path / d for d in ("first", "second", "third"))
    for directory in (first, second, third):
        directory.mkdir()
    elf_of(first, "libskip.so", 1)  # 32-bit: ld.so skips it
    elf_of(second, "libskip.so", 2)
    (first / "libtext.so").write_text("stand-in for libtext.so (tests/fakes): not a real library\n")
    elf_of(second, "libtext.so", 2)
    monkeypatch.setenv("LD_LIBRARY_PATH", f"{first}:{second}")
    monkeypatch.setattr(cann_runtime, "run", lambda *argv: "")  # no ldconfig cache
    loader = cann_runtime.Loader([str(third)], kind=b"\x02\x3e\x00")
    obj = cann_runtime.Dynamic(tmp_path / "libuser.so", rpath=[str(third)])
    assert loader.find("libskip.so", obj) == ("elf", second / "libskip.so")
    assert loader.find("libtext.so", obj) == ("not-elf", first / "libtext.so")
    assert loader.find("libnone.so", obj) == ("missing", None)
    elf_of(third, "libtext.so", 2)  # DT_RPATH comes before LD_LIBRARY_PATH
    assert loader.find("libtext.so", obj) == ("elf", third / "libtext.so")


@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("nm") is None, reason="needs gcc and nm")
def test_the_generated_source_exports_every_symbol_with_its_behaviour(tmp_path: Path) -> None:
    names = ["aclInit", "aclrtGetDeviceCount", "aclrtGetSocName", "snprintf_s", "_ZTVN2ge5GraphE"]
    source, kinds = cann_runtime.c_source(names)
    assert kinds == {"aclInit": "0", "aclrtGetDeviceCount": "modelled", "aclrtGetSocName": "string",
                     "snprintf_s": "modelled", "_ZTVN2ge5GraphE": "data"}  # fmt: skip
    (tmp_path / "s.c").write_text(source)
    lib = tmp_path / "libascendcl.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libascendcl.so", "-o", str(lib), str(tmp_path / "s.c")],
                   check=True)  # fmt: skip
    assert cann_runtime.symbols(lib, defined=True) >= set(names)
    import ctypes

    loaded = ctypes.CDLL(str(lib))
    count = ctypes.c_uint(7)
    assert loaded.aclrtGetDeviceCount(ctypes.byref(count)) == 0 and count.value == 0
    get_soc = loaded.aclrtGetSocName
    get_soc.restype = ctypes.c_void_p
    address = get_soc()
    assert address and ctypes.string_at(address) == b"" and address & 0xFFFFFFFF == 0
    buf = ctypes.create_string_buffer(8)
    assert loaded.snprintf_s(buf, 8, 7, b"%d-%s", 42, b"xy") == 5 and buf.value == b"42-xy"
    assert loaded.aclInit(None) == 0

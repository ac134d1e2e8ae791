"""The chip guard: `ascend-llm check` and every stage's preflight refuse an image built for another chip.

The host is a test sysroot with NPU device nodes and an executable ``npu-smi`` that prints one of the
recorded outputs of tests/entrypoints/npu_smi.py (910B, A3 and 310P hosts).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from ascend_llm import chip
from npu_smi import A2_910B, A3_910C, HOSTS, INFERENCE_310P
from stagekit import make_devices, make_mindspeed_home

TAG = "ascend-llm-stack:8.1.rc1-{chip}-torch2.1.0-mslm2.1.0-ubuntu22.04-py3.10-aarch64"


def image(sysroot: Path, chip_key: str) -> None:
    """stack.json of an 8.1.RC1 image built for ``chip_key``."""
    path = sysroot / "etc/ascend-llm-stack/stack.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    stack = {"row": "8.1.RC1", "cann": "8.1.RC1", "hdk_min": "25.0.RC1", "chip": chip_key, "arch": "aarch64",
             "os": "ubuntu22.04", "python": "3.10", "torch": "2.1.0",
             "mindspeed_llm": {"release": "2.1.0"}}  # fmt: skip
    path.write_text(json.dumps(stack))


def host(sysroot: Path, output: str, npus: int = 8) -> None:
    """NPU device nodes and an ``npu-smi`` that prints ``output`` for ``npu-smi info``."""
    make_devices(sysroot, npus)
    smi = sysroot / "usr/local/bin/npu-smi"
    smi.parent.mkdir(parents=True, exist_ok=True)
    smi.write_text(f"#!/bin/sh\n[ \"$1\" = info ] || exit 2\ncat <<'EOF'\n{output}EOF\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)


def sft(ascend, world):
    make_mindspeed_home()
    return ascend(*world.sft_args(), "--dry-run")


@pytest.mark.parametrize(
    ("output", "name", "key", "chips"),
    [(A2_910B, "910B3", "910b", 8), (A3_910C, "Ascend910", "A3", 16), (INFERENCE_310P, "310P3", "310p", 2)],
)
def test_the_recorded_hosts_are_recognised(output: str, name: str, key: str, chips: int) -> None:
    assert chip.npu_names(output) == [name] * chips
    assert chip.host_chip(output) == {"name": name, "chip": key}


def test_soc_names_map_to_the_matrix_chips() -> None:
    assert [chip.family(n) for n in ("910B1", "910B2C", "910B4-1", "Ascend910B3")] == ["910b"] * 4
    assert [chip.family(n) for n in ("Ascend910", "Ascend910_9392", "910_9381")] == ["A3"] * 3
    assert [chip.family(n) for n in ("310P3", "Ascend310P1", "910A", "910ProB", "Atlas9")] == [
        "310p", "310p", "910", "910", None,
    ]  # fmt: skip


@pytest.mark.parametrize(("built", "on", "fix"), [
    ("910b", "A3", f"use {TAG.format(chip='a3')} (invoke build --cann 8.1.RC1 --chip A3)"),
    ("A3", "910b", f"use {TAG.format(chip='910b')} (invoke build --cann 8.1.RC1 --chip 910b)"),
    ("910b", "310p", "ascend-llm-stack builds training images for 910b (Atlas A2, 910B) and A3 (Atlas A3, 910C)"),
])  # fmt: skip
def test_a_stage_refuses_another_chips_host_in_one_line(
    ascend, world, sysroot: Path, roomy_disk, built: str, on: str, fix: str
) -> None:
    image(sysroot, built)
    host(sysroot, HOSTS[on])
    result = sft(ascend, world)
    assert result.code == 2 and result.out == ""
    lines = [line for line in result.err.splitlines() if "built for" in line]
    assert len(lines) == 1, result.err
    line = lines[0]
    assert line.startswith(f"ascend-llm: this image is built for chip {built} ({chip.TITLES[built]}) but ")
    assert f"this host's NPUs are {chip.host_chip(HOSTS[on])['name']} ({chip.TITLES[on]})" in line
    assert line.endswith(fix)


@pytest.mark.parametrize(("built", "on"), [("910b", "A3"), ("A3", "910b"), ("910b", "310p")])
def test_check_refuses_another_chips_host(ascend, sysroot: Path, built: str, on: str) -> None:
    image(sysroot, built)
    host(sysroot, HOSTS[on])
    result = ascend("check", "--json")
    assert result.code == 1
    report = json.loads(result.out)
    row = next(r for r in report["items"] if r["component"] == "chip")
    assert row["ok"] is False and row["expected"] == built and row["found"].startswith(f"{on} (")
    assert any("built for" in p and "this host's NPUs are" in p for p in report["problems"])


@pytest.mark.parametrize("key", ["910b", "A3"])
def test_the_images_own_chip_passes(ascend, world, sysroot: Path, roomy_disk, key: str) -> None:
    image(sysroot, key)
    host(sysroot, HOSTS[key])
    result = sft(ascend, world)
    assert result.code == 0, result.err
    row = next(r for r in json.loads(ascend("check", "--json").out)["items"] if r["component"] == "chip")
    assert row["ok"] is True


def test_no_visible_npu_never_blocks(ascend, world, sysroot: Path, roomy_disk) -> None:
    """A dry run or a CPU stage on a host whose npu-smi says A3: no /dev/davinci* here, nothing to guard."""
    image(sysroot, "910b")
    host(sysroot, A3_910C, npus=0)
    for node in (sysroot / "dev").iterdir():
        node.unlink()
    result = sft(ascend, world)
    assert result.code == 0, result.err
    assert "built for" not in ascend("check").err


def test_npus_without_npu_smi_are_not_guessed(ascend, world, sysroot: Path, roomy_disk) -> None:
    image(sysroot, "910b")
    make_devices(sysroot, 8)
    assert sft(ascend, world).code == 0

"""`invoke verify` and `invoke manifest` against the integration chain's image, and against broken images.

The broken images are built FROM the chain's runtime image with one deliberate fault per check
(a wrong pinned version, a leftover .run installer, a wrong and a missing CANN variable, a baked
proxy, ...), and removed again. Each must fail exactly its check, with a message naming the problem.
The helpers' parsers are tested without Docker at the end.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chain import Chain

from ascend_stack import render, verify
from ascend_stack.lock import Lock
from ascend_stack.matrix import load_matrix
from ascend_stack.verify import CheckResult, Verdict

REPO = Path(__file__).resolve().parents[1]
SITE = "/opt/venv/lib/python3.11/site-packages"
TOOLKIT_LIB = "/usr/local/Ascend/ascend-toolkit/latest/lib64"
NO_NPU = "no Ascend NPU here (no /dev/davinci* in the container): run tier 2 on an Ascend host"


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True)


def build_from(docker_client: Any, base: str, steps: str) -> str:
    """A throw-away image ``FROM base`` plus ``steps`` run as root (classic builder: nothing needs BuildKit
    here), then back to ``base``'s user."""
    tag = f"ascend-llm-stack-verify-broken:{uuid.uuid4().hex[:12]}"
    user = docker_client.images.get(base).attrs["Config"].get("User") or "root"
    dockerfile = f'FROM {base}\nUSER root\nSHELL ["/bin/bash", "-o", "pipefail", "-c"]\n{steps}\nUSER {user}\n'
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True)
    return tag


def remove_image(docker_client: Any, tag: str) -> None:
    docker_client.images.remove(tag, force=True)


def by_name(verdict: Verdict) -> dict[str, CheckResult]:
    return {f"{r.layer}/{r.name}": r for r in verdict.results}


def check(chain: Chain, image: str, tmp_path: Path, **kwargs: Any) -> Verdict:
    return verify.run(image, lock_dir=chain.opts.dirs.locks, log_dir=tmp_path, **kwargs)


# --------------------------------------------------------------------------------------------------------
# the chain's image: tier 1 passes, tier 2 skips with its reason


@pytest.fixture(scope="module")
def chain_verdict(chain: Chain, tmp_path_factory: pytest.TempPathFactory) -> Verdict:
    return check(chain, chain.image, tmp_path_factory.mktemp("verify"), tier="all")


@pytest.mark.docker
def test_tier1_passes_on_the_chain_image(chain_verdict: Verdict) -> None:
    assert chain_verdict.ok, chain_verdict.summary()
    tier1 = [r for r in chain_verdict.results if r.tier == "1"]
    assert {r.layer for r in tier1} == {"base", "cann", "pta", "mindspeed", "runtime"}
    assert sum(r.outcome == "passed" for r in tier1) >= 50
    assert chain_verdict.summary().splitlines()[-1].startswith("verdict: PASS: tier 1: ")


@pytest.mark.docker
def test_library_resolution_is_skipped_never_passed_on_a_stand_in_cann(chain_verdict: Verdict) -> None:
    result = by_name(chain_verdict)["pta/torch_npu_libraries_resolve_against_the_image_cann"]
    assert result.outcome == "skipped"
    assert "stand-in" in result.message and "libascendcl.so is not an ELF file" in result.message


@pytest.mark.docker
@pytest.mark.skipif(bool(verify.npu_run_args()), reason="this host has Ascend NPUs: tier 2 runs here")
def test_tier2_is_skipped_with_one_line_reason(chain_verdict: Verdict) -> None:
    tier2 = [r for r in chain_verdict.results if r.tier == "2"]
    assert {r.name for r in tier2} >= {
        "npu_smi_info",
        "torch_npu_is_available",
        "hccl_all_reduce_over_all_visible_npus",
    }
    assert {(r.outcome, r.message) for r in tier2} == {("skipped", NO_NPU)}
    assert f"tier 2: 0 passed, {len(tier2)} skipped ({NO_NPU})" in chain_verdict.verdict_line()


@pytest.mark.docker
@pytest.mark.skipif(bool(verify.npu_run_args()), reason="this host has Ascend NPUs: tier 2 runs here")
def test_invoke_verify_tier2_only_exits_0_and_says_why(chain: Chain) -> None:
    out = invoke("verify", "--cann", "test", "--arch", "x86_64", "--tier", "2",
                 "--lock-dir", str(chain.opts.dirs.locks))  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert (
        lines[0] == f"verify {render.final_tag(chain.target)}: layers base > cann > pta > mindspeed > runtime, tier 2"
    )
    checks = [line for line in lines if line.startswith("  ")]
    assert checks and all(line.startswith("  SKIP") and line.endswith(NO_NPU) for line in checks)
    assert lines[-1] == f"verdict: PASS: tier 2: 0 passed, {len(checks)} skipped ({NO_NPU})"


def test_a_missing_image_is_one_line_naming_it_and_the_build(docker_client: Any) -> None:
    out = invoke("verify", "--image", "ascend-llm-stack:no-such-image")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "ascend-llm-stack:no-such-image" in out.stderr
    assert "invoke build" in out.stderr and "Traceback" not in out.stderr


def test_a_missing_matrix_target_image_names_the_exact_build_command(docker_client: Any) -> None:
    out = invoke("verify", "--cann", "8.1.RC1", "--arch", "aarch64", "--os", "openeuler22.03", "--chip", "A3")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "ascend-llm-stack:8.1.rc1-a3-torch2.1.0-mslm2.1.0-openeuler22.03-py3.10-aarch64" in out.stderr
    assert "invoke build --cann 8.1.RC1 --torch 2.1.0 --arch aarch64 --os openeuler22.03 --chip A3" in out.stderr


def test_image_and_target_choices_are_exclusive() -> None:
    out = invoke("verify", "--image", "x:y", "--cann", "8.1.RC1")
    assert (out.returncode, out.stderr) == (
        2,
        "error: give either --image or --cann/--torch/--arch/--os/--chip, not both\n",
    )


# --------------------------------------------------------------------------------------------------------
# broken images: each fault fails its check, with a message naming the problem

LOGS_CHECK = "runtime/the_user_may_write_what_the_stages_write[/opt/MindSpeed-LLM/logs]"
# (dockerfile step, {check: text its message must contain})
FAULTS: list[tuple[str, dict[str, str]]] = [
    (  # a wrong pinned version: torch_npu's metadata says 2.12.0
        f"RUN sed -i 's/^Version: 2.13.0$/Version: 2.12.0/' {SITE}/torch_npu-2.13.0.dist-info/METADATA",
        {
            "pta/torch_npu_is_the_rows": "torch_npu 2.12.0 is installed, the row says 2.13.0",
            "pta/wheel_is_the_locked_file[torch_npu]": "torch_npu 2.12.0 is installed, the lock records torch_npu-2.13",
            "pta/pta_labels_are_the_installed_versions": "label torch-npu=2.13.0, installed 2.12.0",
        },
    ),
    (  # CANN's numpy<2 pin broken by a later install
        f"RUN sed -i 's/^Version: 1.26.4$/Version: 2.1.0/' {SITE}/numpy-1.26.4.dist-info/METADATA",
        {
            "base/cann_python_dependency_pins_hold": "numpy 2.1.0 does not satisfy numpy<2",
            "pta/pins_hold": "numpy 2.1.0 breaks the pin numpy<2",
        },
    ),
    (  # transformers moved by a requirements file
        f"RUN sed -i 's/^Version: 4.51.0$/Version: 4.50.3/' {SITE}/transformers-4.51.0.dist-info/METADATA",
        {
            "mindspeed/transformers_is_the_rows_pin": "transformers 4.50.3 is installed, the row pins 4.51.0",
            "mindspeed/mindspeed_labels_are_the_installed_stack": "label transformers=4.51.0, installed 4.50.3",
        },
    ),
    (  # a broken dependency
        "RUN sed -i '/^Version: /a Requires-Dist: ascend-verify-missing-dependency'"
        f" {SITE}/apex-0.1_ascend.dist-info/METADATA",
        {"base/pip_check_is_clean": "ascend-verify-missing-dependency"},
    ),
    (  # NVIDIA's apex instead of Ascend's
        f"RUN sed -i 's/^Version: 0.1-ascend$/Version: 0.1/' {SITE}/apex-0.1_ascend.dist-info/METADATA",
        {"pta/apex_is_ascend_apex": "apex 0.1 is installed, not Ascend apex"},
    ),
    (  # a setuptools without pkg_resources (82+): Megatron core_r0.8.0 cannot be imported
        f"RUN rm -rf {SITE}/pkg_resources",
        {
            "pta/pkg_resources_imports_where_the_sources_need_it": "`import pkg_resources` fails: ModuleNotFoundError",
            "mindspeed/imports_as_a_stage_imports_it[megatron.core]": "`import megatron.core` fails in "
            "/opt/MindSpeed-LLM: ModuleNotFoundError: No module named 'pkg_resources'",
        },
    ),
    (  # a leftover CANN installer
        "RUN printf '#!/bin/sh\\n' > /opt/Ascend-cann-toolkit_8.2.RC1_linux-x86_64.run",
        {"base/no_cann_installer_is_left": "/opt/Ascend-cann-toolkit_8.2.RC1_linux-x86_64.run"},
    ),
    (  # a wrong CANN variable, and one that set_env.sh sets but the image's ENV lacks
        "ENV ASCEND_OPP_PATH=/usr/local/Ascend/opp\n"
        "RUN echo 'export ASCEND_SLOG_PRINT_TO_STDOUT=0' >> /usr/local/Ascend/ascend-toolkit/set_env.sh",
        {
            "cann/plain_run_has_exactly_the_set_env_variables": "ASCEND_OPP_PATH is '/usr/local/Ascend/opp' in the "
            "image, set_env.sh gives '/usr/local/Ascend/ascend-toolkit/latest/opp'; ASCEND_SLOG_PRINT_TO_STDOUT is "
            "missing (set_env.sh sets it to '0')",
        },
    ),
    (  # device selection baked into the image
        "ENV ASCEND_VISIBLE_DEVICES=0",
        {"cann/no_runtime_only_variable_is_baked_in": "ASCEND_VISIBLE_DEVICES=0"},
    ),
    (  # the build's proxy kept
        "ENV https_proxy=http://proxy.example:3128",
        {"base/no_proxy_or_index_setting_in_the_environment": "https_proxy=http://proxy.example:3128"},
    ),
    (  # a pip cache left behind
        "RUN mkdir -p /root/.cache/pip/http && echo cached > /root/.cache/pip/http/blob",
        {"base/no_pip_cache": "pip cache left in the image"},
    ),
    (  # Megatron's tree only partly copied
        "RUN rm -rf /opt/MindSpeed-LLM/megatron/training",
        {"mindspeed/megatron_tree_is_copied_in": "/opt/MindSpeed-LLM/megatron lacks training/"},
    ),
    (  # a stage's directory in the image left to root
        "RUN chown root:root /opt/MindSpeed-LLM/logs && chmod 0755 /opt/MindSpeed-LLM/logs",
        {LOGS_CHECK: "HwHiAiUser cannot write /opt/MindSpeed-LLM/logs (the stages' log folder when no --save"},
    ),
    (  # an installed file anyone may change
        "RUN chmod o+w /opt/MindSpeed-LLM/posttrain_gpt.py",
        {"runtime/nothing_installed_is_writable_by_others": "writable by every user: /opt/MindSpeed-LLM/posttrain_"},
    ),
    (  # the HF cache pointed at root's home
        "ENV HF_HOME=/root/.cache/huggingface",
        {"runtime/caches_resolve_under_the_users_home": "not under /home/HwHiAiUser: HF cache=/root/.cache/hugging"},
    ),
    (  # the entrypoint replaced
        'ENTRYPOINT ["python"]',
        {
            "runtime/entrypoint_is_ascend_llm": "ENTRYPOINT/CMD are (['python'], None)",
            "runtime/plain_run_prints_the_help": "printed no ascend-llm usage",
        },
    ),
]


@pytest.fixture(scope="module")
def broken_verdict(chain: Chain, docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Verdict]:
    tag = build_from(docker_client, chain.image, "\n".join(step for step, _ in FAULTS))
    try:
        yield check(chain, tag, tmp_path_factory.mktemp("broken"), tier="1")
    finally:
        remove_image(docker_client, tag)


@pytest.mark.docker
def test_each_fault_fails_exactly_its_check(broken_verdict: Verdict) -> None:
    expected = {name for _, checks in FAULTS for name in checks}
    failed = {f"{r.layer}/{r.name}" for r in broken_verdict.failed}
    assert failed == expected, broken_verdict.summary()
    assert not broken_verdict.ok


@pytest.mark.docker
@pytest.mark.parametrize("name", [name for _, checks in FAULTS for name in checks])
def test_a_failure_message_names_the_problem(broken_verdict: Verdict, name: str) -> None:
    want = next(checks[name] for _, checks in FAULTS if name in checks)
    result = by_name(broken_verdict)[name]
    assert result.outcome == "failed"
    assert want in result.message and "\n" not in result.message, result.message


@pytest.mark.docker
def test_the_summary_names_every_failed_check(broken_verdict: Verdict) -> None:
    text = broken_verdict.summary()
    assert text.splitlines()[-1].startswith(f"verdict: FAIL: {len(broken_verdict.failed)} of ")
    for r in broken_verdict.failed:
        assert f"  FAIL  {r.layer:<9}  {r.name}" in text


# A CANN made of real (tiny) ELF libraries: libascendcl.so needs the driver's libascend_hal.so,
# which only the host provides; the other libraries torch_npu links are all there.
ELF_CANN = (
    "RUN cd /tmp && echo 'int ascend_verify_stub(void) { return 0; }' > stub.c"
    " && gcc -shared -fPIC -Wl,-soname,libascend_hal.so -o libascend_hal.so stub.c"
    " && for n in hccl acl_op_compiler ge_runner graph acl_tdt_channel fmk_parser ascend_protobuf; do"
    f" gcc -shared -fPIC -Wl,-soname,lib$n.so -o {TOOLKIT_LIB}/lib$n.so stub.c; done"
    f" && gcc -shared -fPIC -Wl,-soname,libascendcl.so -o {TOOLKIT_LIB}/libascendcl.so stub.c"
    " -L/tmp -Wl,--no-as-needed -lascend_hal"
    " && gcc -shared -fPIC -Wl,-soname,libatb.so -o /usr/local/Ascend/nnal/atb/latest/atb/cxx_abi_1/lib/libatb.so"
    " stub.c && rm -f stub.c libascend_hal.so"
)


@pytest.fixture(scope="module")
def elf_cann(chain: Chain, docker_client: Any) -> Iterator[str]:
    tag = build_from(docker_client, chain.image, ELF_CANN)
    try:
        yield tag
    finally:
        remove_image(docker_client, tag)


@pytest.mark.docker
def test_only_host_driver_libraries_may_be_missing(chain: Chain, elf_cann: str, tmp_path: Path) -> None:
    verdict = check(chain, elf_cann, tmp_path, tier="1", keyword="torch_npu_l")
    results = by_name(verdict)
    assert results["pta/torch_npu_libraries_resolve_against_the_image_cann"].outcome == "passed", verdict.summary()
    assert results["pta/torch_npu_links_the_images_cann"].outcome == "passed", verdict.summary()


@pytest.mark.docker
def test_a_missing_cann_library_fails_resolution_naming_it(
    chain: Chain, docker_client: Any, elf_cann: str, tmp_path: Path
) -> None:
    tag = build_from(docker_client, elf_cann, f"RUN rm {TOOLKIT_LIB}/libgraph.so")
    try:
        verdict = check(chain, tag, tmp_path, tier="1", keyword="torch_npu_libraries")
    finally:
        remove_image(docker_client, tag)
    result = by_name(verdict)["pta/torch_npu_libraries_resolve_against_the_image_cann"]
    assert result.outcome == "failed", verdict.summary()
    assert result.message.startswith("libgraph.so not found (needed by ") and "libtorch_npu.so" in result.message
    assert "libascend_hal" not in result.message


# --------------------------------------------------------------------------------------------------------
# invoke manifest


@pytest.mark.docker
def test_manifest_is_computed_from_the_image(chain: Chain, docker_client: Any, tmp_path: Path) -> None:
    out = invoke("manifest", "--image", chain.image, "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    json_path, md_path, _ = (Path(line) for line in out.stdout.split())
    data = json.loads(json_path.read_text())
    stack = json.loads(docker_client.containers.run(chain.image, [], entrypoint=["cat", verify.STACK_JSON],
                                                    remove=True))  # fmt: skip
    assert data["cann"]["toolkit"] == data["cann"]["nnal_atb"] == "8.2.RC1"
    assert data["cann"]["kernels"] == ["910b"] and set(data["cann"]["components"].values()) == {"8.2.RC1"}
    assert (
        "torch==2.13.0+cpu" in data["python"]["pip_freeze"] and "transformers==4.51.0" in data["python"]["pip_freeze"]
    )
    assert data["os"]["manager"] == "dpkg" and "gcc" in {p["name"] for p in data["os"]["packages"]}
    for name in ("mindspeed", "mindspeed_llm", "megatron"):
        assert data["sources"][name]["commit"] == stack[name]["commit"] and len(stack[name]["commit"]) == 40
    assert data["matrix_row"]["row"] == "test" and data["matrix_row"]["torch-npu"] == "2.13.0"
    assert data["labels"] == docker_client.images.get(chain.image).labels
    text = md_path.read_text()
    assert text.startswith(f"# Manifest of `{chain.image}`")
    for heading in ("## Matrix row (labels)", "## CANN", "## Sources", "## Python 3.11", "## OS packages", "## Labels"):
        assert heading in text
    assert stack["megatron"]["commit"] in text and "| toolkit | 8.2.RC1 |" in text


@pytest.mark.docker
def test_the_sbom_validates_lists_the_lock_and_is_reproducible(
    chain: Chain, docker_client: Any, tmp_path: Path
) -> None:
    """Two `invoke manifest` runs on the chain's image: valid CycloneDX 1.6, equal but for the timestamp."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    docs = []
    for run in ("first", "second"):
        out = invoke("manifest", "--image", chain.image, "--out", str(tmp_path / run),
                     "--lock-dir", str(chain.opts.dirs.locks))  # fmt: skip
        assert out.returncode == 0, out.stderr
        text = Path(out.stdout.split()[2]).read_text()
        assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
        docs.append(json.loads(text))
    first, second = docs
    first["metadata"].pop("timestamp"), second["metadata"].pop("timestamp")
    assert first == second
    image_id = docker_client.images.get(chain.image).id
    assert first["metadata"]["component"]["hashes"] == [{"alg": "SHA-256", "content": image_id.split(":")[1]}]
    components = {c["name"]: c for c in first["components"]}
    lock = Lock.load("test", chain.opts.dirs.locks)
    wheels = [f for f in lock.files if f.endswith(".whl")]
    assert wheels and len(wheels) == 2  # today's lock: torch and torch_npu
    for wheel in wheels:
        name, version = wheel.split("-")[:2]
        c = components[name.replace("_", "-")]
        assert c["version"] == version and {"alg": "SHA-256", "content": lock.files[wheel]} in c["hashes"]
    kinds = {c.get("purl", "").split("/")[0] for c in first["components"]}
    assert {"pkg:pypi", "pkg:deb", "pkg:generic"} <= kinds
    assert components["cann-toolkit"]["version"] == "8.2.RC1" and components["cann-toolkit"]["hashes"]
    assert len(components["megatron"]["version"]) == 40


def test_manifest_of_a_missing_image_is_one_line(docker_client: Any) -> None:
    out = invoke("manifest", "--image", "ascend-llm-stack:no-such-image")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no-such-image" in out.stderr


# --------------------------------------------------------------------------------------------------------
# the helpers, without Docker


def test_layer_chain_is_inherited_bottom_up() -> None:
    assert verify.layer_chain("base") == ["base"]
    assert verify.layer_chain("pta") == ["base", "cann", "pta"]
    assert verify.layer_chain("runtime") == ["base", "cann", "pta", "mindspeed", "runtime"]
    assert all((verify.IMAGE_TESTS / layer).is_dir() for layer in verify.layer_chain("runtime"))


CLEAN = {"PATH": "/usr/bin:/bin", "HOME": "/root"}
SOURCED = {
    **CLEAN,
    "PATH": "/usr/local/Ascend/t/bin:/usr/bin:/bin",
    "LD_LIBRARY_PATH": "/usr/local/Ascend/t/lib64:/usr/local/Ascend/nnal/lib:",
    "ASCEND_OPP_PATH": "/usr/local/Ascend/t/opp",
    "ATB_HOME_PATH": "/usr/local/Ascend/nnal/cxx_abi_1",
    "SHLVL": "2",
}
GOOD = {
    "PATH": "/usr/local/Ascend/t/bin:/opt/venv/bin:/usr/bin:/bin",
    "LD_LIBRARY_PATH": "/usr/local/Ascend/t/lib64:/usr/local/Ascend/nnal/lib:/usr/local/Ascend/driver/lib64",
    "ASCEND_OPP_PATH": "/usr/local/Ascend/t/opp",
    "ATB_HOME_PATH": "/usr/local/Ascend/nnal/cxx_abi_1",
    "LANG": "C.UTF-8",
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({}, None),
        ({"ASCEND_OPP_PATH": None}, "ASCEND_OPP_PATH is missing (set_env.sh sets it to '/usr/local/Ascend/t/opp')"),
        (
            {"ATB_HOME_PATH": "/x"},
            "ATB_HOME_PATH is '/x' in the image, set_env.sh gives '/usr/local/Ascend/nnal/cxx_abi_1'",
        ),
        ({"LD_LIBRARY_PATH": "/usr/local/Ascend/t/lib64"}, "LD_LIBRARY_PATH lacks /usr/local/Ascend/nnal/lib"),
        (
            {"LD_LIBRARY_PATH": "/usr/local/Ascend/nnal/lib:/usr/local/Ascend/t/lib64"},
            "LD_LIBRARY_PATH holds set_env.sh's entries in another order than set_env.sh gives",
        ),
        ({"PATH": "/usr/local/Ascend/old/bin:" + GOOD["PATH"]}, "PATH has /usr/local/Ascend/old/bin, which set_env.sh"),
        ({"ASCEND_STALE": "1"}, "ASCEND_STALE='1' is in the image but set_env.sh does not set it"),
    ],
)
def test_env_problems(change: dict[str, str | None], problem: str | None) -> None:
    image = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    problems = verify.env_problems(image, CLEAN, SOURCED, ["/usr/local/Ascend/driver/lib64"])
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_ldd_missing_and_driver_allowance() -> None:
    out = (
        "\tlibascendcl.so => /usr/local/Ascend/ascend-toolkit/latest/lib64/libascendcl.so (0x1)\n"
        "\tlibascend_hal.so => not found\n\tlibgraph.so => not found\n\tlinux-vdso.so.1 (0x2)\n"
    )
    assert verify.ldd_missing(out) == {"libascend_hal.so", "libgraph.so"}
    assert verify.ldd_missing(out) - verify.HOST_DRIVER_LIBS == {"libgraph.so"}


def test_standin_detection_needs_both_non_elf_and_the_stand_ins_words() -> None:
    assert verify.standin_reason(b"\x7fELF\x02\x01\x01", "libascendcl.so") is None
    assert verify.standin_reason(b"garbage, truncated download", "libascendcl.so") is None
    reason = verify.standin_reason(b"stand-in for libascendcl.so (tests/fakes)\n", "libascendcl.so")
    assert reason is not None and "test stand-in" in reason and "libascendcl.so is not an ELF file" in reason


@pytest.mark.parametrize(
    ("os_name", "release", "ok"),
    [
        ("ubuntu22.04", {"ID": "ubuntu", "VERSION_ID": "22.04"}, True),
        ("ubuntu22.04", {"ID": "ubuntu", "VERSION_ID": "20.04", "PRETTY_NAME": "Ubuntu 20.04.6 LTS"}, False),
        ("openeuler22.03", {"ID": "openEuler", "VERSION_ID": "22.03"}, True),
        ("debian-bookworm", {"ID": "debian", "VERSION_ID": "12", "VERSION_CODENAME": "bookworm"}, True),
        ("debian-bookworm", {"ID": "ubuntu", "VERSION_ID": "22.04", "VERSION_CODENAME": "jammy"}, False),
    ],
)
def test_os_problem(os_name: str, release: dict[str, str], ok: bool) -> None:
    problem = verify.os_problem(os_name, release)
    assert (problem is None) == ok
    if not ok:
        assert problem is not None and problem.endswith(f"not {os_name}")


def test_version_cfg_versions() -> None:
    text = "# version: 1.0\nruntime_running_version=[7.6.0.1.220:8.0.0]\nhccl_running_version=[7.6.0.1.220:8.0.0]\n"
    assert verify.version_cfg_versions(text) == {"runtime": "8.0.0", "hccl": "8.0.0"}


def test_npu_run_args_pass_devices_and_driver(tmp_path: Path) -> None:
    assert verify.npu_run_args(dev=tmp_path) == []
    for name in ("davinci0", "davinci1", "davinci10", "davinci_manager", "devmm_svm"):
        (tmp_path / name).touch()
    args = verify.npu_run_args(dev=tmp_path)
    devices = [args[i + 1] for i, a in enumerate(args) if a == "--device"]
    assert devices == [str(tmp_path / n) for n in ("davinci0", "davinci1", "davinci10", "davinci_manager", "devmm_svm")]
    assert verify.npu_run_args("1", dev=tmp_path)[:2] == ["--device", str(tmp_path / "davinci1")]
    assert verify.npu_run_args("none", dev=tmp_path) == []
    with pytest.raises(verify.UserError, match=r"--devices 7: no /dev/davinci7 on this host \(it has: 0, 1, 10\)"):
        verify.npu_run_args("7", dev=tmp_path)
    assert "--group-add" not in args
    for name in ("davinci0", "davinci1", "davinci10"):  # the driver's HwHiAiUser:HwHiAiUser 0660, here gid 1234
        os.chown(tmp_path / name, 0, 1234)
        (tmp_path / name).chmod(0o660)
    args = verify.npu_run_args(dev=tmp_path)
    assert [args[i + 1] for i, a in enumerate(args) if a == "--group-add"] == ["1234"]  # checks run as the user


def test_summary_reads_at_a_glance(tmp_path: Path) -> None:
    results = [
        CheckResult("base", "pip_check_is_clean", "1", "passed", ""),
        CheckResult("pta", "torch_is_the_rows", "1", "failed", "torch 2.12.0 is installed, the row says 2.13.0"),
        CheckResult("pta", "matmul", "2", "skipped", NO_NPU),
    ]
    text = Verdict("img:tag", ["base", "cann", "pta"], "all", results, tmp_path / "log", 1).summary().splitlines()
    assert text[0] == "verify img:tag: layers base > cann > pta, tier all"
    assert text[1].split() == ["PASS", "base", "pip_check_is_clean"]
    assert text[2].startswith("  FAIL  pta        torch_is_the_rows") and text[2].endswith("the row says 2.13.0")
    assert text[-1] == f"verdict: FAIL: 1 of 3 checks failed: pta/torch_is_the_rows (log: {tmp_path / 'log'})"


def test_labels_resolve_to_the_matrix_target() -> None:
    matrix = load_matrix(REPO / "matrix.yaml")
    given = {
        "layer": "runtime",
        "row": "8.1.RC1",
        "torch": "2.6.0",
        "arch": "aarch64",
        "os": "ubuntu22.04",
        "chip": "A3",
    }
    labels = {f"io.ascend-llm-stack.{k}": v for k, v in given.items()}
    expected = verify.expected_from_labels(labels, matrix)
    assert expected.target is not None and expected.target.torch_npu == "2.6.0rc1"
    assert (expected.os, expected.python, expected.arch, expected.layers[-1]) == (
        "ubuntu22.04",
        "3.10",
        "aarch64",
        "runtime",
    )
    with pytest.raises(verify.UserError, match=r"the image's labels name no target of matrix\.yaml: unknown CANN"):
        verify.expected_from_labels({**labels, "io.ascend-llm-stack.row": "9.9.9"}, matrix)
    base = {"io.ascend-llm-stack.layer": "base", "io.ascend-llm-stack.os": "debian-bookworm",
            "io.ascend-llm-stack.python": "3.11", "io.ascend-llm-stack.arch": "x86_64"}  # fmt: skip
    assert verify.expected_from_labels(base, matrix).target is None

"""``ascend-llm check``: is this image complete, and does the host give it what it needs?

Compares the installed stack with /etc/ascend-llm-stack/stack.json (the values the image labels
carry), the host driver with the row's HDK minimum, the image's chip with the host's NPUs
(``npu-smi info``), and looks for the devices and mounts that ``docker run`` must pass. Prints one
line per item; exits 1 with an actionable line per problem.
"""

from __future__ import annotations

import json
import platform
import re
import sys
from typing import Any

from ascend_llm import chip
from ascend_llm.options import Option, common, opt
from ascend_llm.release import STACK_JSON, read_stack
from ascend_llm.script import LaunchScript
from ascend_llm.stages.base import Stage, StageRequest
from ascend_llm.system import mindspeed_llm_home, npu_device_ids, sysroot_path

DRIVER_VERSION = "/usr/local/Ascend/driver/version.info"
TOOLKIT_HOME = "/usr/local/Ascend/ascend-toolkit/latest"  # before CANN 8.5; stack.json says where
MOUNTS = (
    ("/usr/local/Ascend/driver/lib64", "-v /usr/local/Ascend/driver:/usr/local/Ascend/driver:ro"),
    ("/usr/local/dcmi", "-v /usr/local/dcmi:/usr/local/dcmi:ro"),
    ("/usr/local/bin/npu-smi", "-v /usr/local/bin/npu-smi:/usr/local/bin/npu-smi:ro"),
    ("/etc/ascend_install.info", "-v /etc/ascend_install.info:/etc/ascend_install.info:ro"),
)
DEVICE_NODES = ("davinci_manager", "devmm_svm", "hisi_hdc")


def ascend_version_key(text: str) -> tuple[int, int, int, int] | None:
    """Order Ascend versions: 24.1.RC2 < 24.1.0 < 25.0.RC1 < 25.0.0 < 25.2.0."""
    match = re.match(r"^\s*(\d+)\.(\d+)\.(rc(\d+)|\d+)", text.strip(), re.IGNORECASE)
    if not match:
        return None
    major, minor, third, rc = match.groups()
    if rc is not None:
        return int(major), int(minor), 0, int(rc)
    return int(major), int(minor), 1, int(third)


def read_key_file(path: str, key: str) -> str | None:
    """``key=value`` from a version file under the sysroot."""
    try:
        text = sysroot_path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip().lower() == key.lower():
            return value.strip()
    return None


def installed_version(dist: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(dist)
        except PackageNotFoundError:
            return None
    except ImportError:  # pragma: no cover - Python < 3.8
        return None


def same_version(expected: str, found: str) -> bool:
    """Compare ignoring a local build tag (2.1.0+cpu == 2.1.0)."""
    return expected.split("+")[0].strip().lower() == found.split("+")[0].strip().lower()


class CheckStage(Stage):
    """Runs in-process: it inspects the container itself, so there is no command to launch."""

    name = "check"
    summary = "Check the image's stack, the host driver, the visible NPUs and the mounts."
    description = (
        "Exit 0 when everything is in place, 1 with one line per problem and its fix.\n"
        "Run it first on a new host: docker run --rm $NPU_FLAGS IMAGE check"
    )

    def options(self) -> list[Option]:
        return [opt("json", help="print the findings as JSON", action="store_true"), *common("config")]

    def needs_model(self, action: str | None) -> bool:
        return False

    def uses_mindspeed(self, action: str | None) -> bool:
        return False

    def preset_stage(self, action: str | None) -> str | None:
        return None

    def compose(self, req: StageRequest) -> LaunchScript:  # pragma: no cover - check runs in-process
        raise NotImplementedError

    def findings(self) -> tuple[list[dict[str, Any]], list[str]]:
        """(rows of component/expected/found/ok, problems)."""
        rows: list[dict[str, Any]] = []
        problems: list[str] = []

        def row(component: str, expected: Any, found: Any, ok: bool, problem: str = "") -> None:
            rows.append({"component": component, "expected": expected, "found": found, "ok": ok})
            if not ok and problem:
                problems.append(problem)

        stack = read_stack()
        if stack is None:
            row(
                "stack.json",
                STACK_JSON,
                "missing",
                False,
                f"{STACK_JSON} is missing: this is not an ascend-llm-stack image (or it is damaged); rebuild it",
            )
            stack = {}
        else:
            row("stack.json", "row " + str(stack.get("row")), "present", True)
        for dist, key in (("torch", "torch"), ("torch_npu", "torch_npu"), ("transformers", "transformers")):
            expected = stack.get(key)
            found = installed_version(dist)
            if expected is None:
                continue
            ok = found is not None and same_version(str(expected), found)
            row(
                dist,
                expected,
                found or "not installed",
                ok,
                f"{dist} {found or 'is not installed'} but the image label says {expected}: the venv was "
                f"changed after the build; rebuild the image or pip install '{dist}=={expected}'",
            )
        cann_expected = stack.get("cann")
        if cann_expected:
            arch = stack.get("arch") or platform.machine()
            home = (stack.get("cann_layout") or {}).get("home") or TOOLKIT_HOME  # 8.5+: cann-<version>
            cann = read_key_file(f"{home}/{arch}-linux/ascend_toolkit_install.info", "version")
            row(
                "CANN",
                cann_expected,
                cann or "not found",
                bool(cann) and same_version(cann_expected, cann or ""),
                f"CANN toolkit {cann or 'not found under ' + home}, expected {cann_expected}: the cann "
                f"layer is missing or different; rebuild the image",
            )
        release = (stack.get("mindspeed_llm") or {}).get("release")
        home = mindspeed_llm_home()
        has_llm = (home / "posttrain_gpt.py").is_file() and (home / "megatron").is_dir()
        if release or stack:
            row(
                "MindSpeed-LLM",
                release or "?",
                str(home) if has_llm else "missing",
                has_llm,
                f"{home} lacks posttrain_gpt.py or megatron/: the mindspeed layer is incomplete; rebuild the image",
            )
        driver = read_key_file(DRIVER_VERSION, "Version")
        hdk_min = stack.get("hdk_min")
        if driver is None:
            row(
                "driver",
                f">= {hdk_min}" if hdk_min else "mounted",
                "not mounted",
                False,
                f"{DRIVER_VERSION} not found: mount the host driver (-v /usr/local/Ascend/driver:"
                f"/usr/local/Ascend/driver:ro)",
            )
        elif hdk_min:
            have, need = ascend_version_key(driver), ascend_version_key(str(hdk_min))
            ok = have is not None and need is not None and have >= need
            row(
                "driver",
                f">= {hdk_min}",
                driver,
                ok,
                f"host driver {driver} is older than this image's HDK minimum {hdk_min}: upgrade the host "
                f"driver/firmware or use an image of an older row",
            )
        ids = npu_device_ids()
        row(
            "NPUs",
            ">= 1",
            len(ids),
            bool(ids),
            "no NPU visible (/dev/davinciN): pass --device /dev/davinci0 ... or use the Ascend Docker Runtime "
            "with -e ASCEND_VISIBLE_DEVICES=0-7",
        )
        smi = chip.run_npu_smi() if ids and stack.get("chip") else None
        host = chip.host_chip(smi) if smi else None
        if host is not None:
            problem = chip.mismatch(stack, host)
            row("chip", stack.get("chip"), f"{host['chip']} ({host['name']})", problem is None, problem or "")
        if ids:
            missing = [n for n in DEVICE_NODES if not sysroot_path(f"/dev/{n}").exists()]
            row(
                "device nodes",
                " ".join(DEVICE_NODES),
                "missing " + " ".join(missing) if missing else "present",
                not missing,
                "pass " + " ".join(f"--device /dev/{n}" for n in missing),
            )
        for path, fix in MOUNTS:
            if driver is None and path.startswith("/usr/local/Ascend/driver"):
                continue  # already reported: the driver is not mounted at all
            present = sysroot_path(path).exists()
            row(path, "mounted", "present" if present else "missing", present, f"{path} is missing: {fix}")
        return rows, problems

    def execute(self, req: StageRequest) -> int:
        """Print the findings (table or JSON) and return 0, or 1 when anything needs fixing."""
        rows, problems = self.findings()
        if req.opts.get("json"):
            print(json.dumps({"ok": not problems, "items": rows, "problems": problems}, indent=2))
        else:
            for r in rows:
                mark = "ok " if r["ok"] else "BAD"
                print(f"{mark} {r['component']:<28} expected {r['expected']!s:<24} found {r['found']}")
        for problem in problems:
            sys.stderr.write(f"ascend-llm: {problem}\n")
        return 1 if problems else 0

"""Checks of a built image, run inside a container of it with pytest-testinfra (``invoke verify``).

One folder per layer of the image chain (``base``, ``cann``, ``pta``, ``mindspeed``, ``runtime``).
An image runs the checks of its own layer (its ``io.ascend-llm-stack.layer`` label) and of every
layer below it, as jupyter/docker-stacks' tests follow its image hierarchy. Tests marked ``tier2``
need Ascend NPUs and the host's driver in the container and skip with one line saying why
elsewhere.

    python -m pytest tests/image --image TAG [--tier 1|2|all] [--lock-dir DIR]

Without ``--image`` nothing here is collected, so the project's own ``pytest`` run skips it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import testinfra

from ascend_stack import container as containers
from ascend_stack import render
from ascend_stack.errors import UserError
from ascend_stack.lock import Lock
from ascend_stack.matrix import Matrix, load_matrix
from ascend_stack.verify import (
    STACK_JSON,
    TOOLKIT_HOME,
    Expected,
    expected_from_labels,
    layer_chain,
    load_lock,
    npu_run_args,
    standin_reason,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LAYERS = [spec.name for spec in render.LAYERS]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("image checks (invoke verify)")
    group.addoption("--image", default=None, help="the image to check (tag or ID)")
    group.addoption("--tier", default="all", choices=("1", "2", "all"), help="1: anywhere; 2: on an Ascend host")
    group.addoption("--lock-dir", default=None, help="folder of the row lock files used to build the image")
    group.addoption("--matrix", default=None, help="the matrix file (default: matrix.yaml)")
    group.addoption("--devices", default=None, help="NPU numbers to pass into the container (default: all)")
    group.addoption("--docker-arg", action="append", default=[], help="extra `docker run` argument (repeatable)")
    group.addoption("--verify-report", default=None, help="write one JSON result per check to this file")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Image checks only run against an image: the project's normal test run does not collect them."""
    return True if config.getoption("--image", None) is None else None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tier2: needs Ascend NPUs and the host driver in the container")
    if config.getoption("--image", None) is not None:
        config.pluginmanager.register(_Report(config.getoption("--verify-report")), "ascend-verify-report")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the checks of the image's layer chain and of the chosen tier."""
    image = config.getoption("--image", None)
    if image is None:
        return
    labels = containers.image_labels(image)
    layer = labels.get(f"{render.LABEL_PREFIX}.layer")
    chain = set(layer_chain(layer)) if layer in render.LAYER_BY_NAME else set(LAYERS)
    tier = config.getoption("--tier")
    keep, drop = [], []
    for item in items:
        tier2 = item.get_closest_marker("tier2") is not None
        wanted_tier = tier == "all" or (tier == "2") == tier2
        (keep if _layer_of(item) in chain and wanted_tier else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _layer_of(item: pytest.Item) -> str:
    rel = Path(str(item.path)).resolve().relative_to(HERE)
    return rel.parts[0] if len(rel.parts) > 1 else ""


class _Report:
    """One line per check for `invoke verify`: layer, check name, outcome, and the reason in one line."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.results: dict[str, dict[str, str]] = {}
        self.tier2: set[str] = set()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.tier2 = {item.nodeid for item in session.items if item.get_closest_marker("tier2")}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        existing = self.results.get(report.nodeid)
        if existing is not None and existing["outcome"] != "passed":
            return  # the first failure or skip of a check is its result
        if existing is not None and report.outcome == "passed" and report.when != "call":
            return
        self.results[report.nodeid] = {
            "layer": Path(report.fspath).parent.name,
            "name": report.nodeid.split("::", 1)[-1].removeprefix("test_"),
            "tier": "2" if report.nodeid in self.tier2 else "1",
            "outcome": report.outcome,
            "message": _message(report),
        }

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.path is not None:
            self.path.write_text(json.dumps(list(self.results.values()), indent=1) + "\n", encoding="utf-8")


def _message(report: pytest.TestReport) -> str:
    """The reason of a failure or skip, as one line: the assertion's message, not the traceback."""
    if report.outcome == "passed":
        return ""
    longrepr: Any = report.longrepr
    if report.outcome == "skipped" and isinstance(longrepr, tuple):
        text = str(longrepr[2])
    else:
        crash = getattr(longrepr, "reprcrash", None)
        text = crash.message if crash is not None else str(longrepr)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = re.sub(r"^(Skipped|Failed|AssertionError|(ascend_stack\.errors\.)?UserError): ", "", first)
    return first if report.when == "call" or report.outcome == "skipped" else f"({report.when}) {first}"


# --------------------------------------------------------------------------------------------------------
# the container and what it is held to


@pytest.fixture(scope="session")
def image(pytestconfig: pytest.Config) -> str:
    return str(pytestconfig.getoption("--image"))


@pytest.fixture(scope="session")
def image_config(image: str) -> dict[str, Any]:
    """``Config`` of ``docker image inspect``: Labels, Env, Entrypoint, Cmd."""
    info = containers.inspect_image(image)
    if info is None:
        pytest.fail(f"no image {image} here")
    return dict(info.get("Config") or {})


@pytest.fixture(scope="session")
def labels(image_config: dict[str, Any]) -> dict[str, str]:
    return dict(image_config.get("Labels") or {})


@pytest.fixture(scope="session")
def image_env(image_config: dict[str, Any]) -> dict[str, str]:
    """The image's own ENV; `docker run -e`, Docker's proxy settings or Ascend Docker Runtime add to a container's."""
    return dict(item.split("=", 1) for item in image_config.get("Env") or [] if "=" in item)


@pytest.fixture(scope="session")
def matrix(pytestconfig: pytest.Config) -> Matrix:
    path = pytestconfig.getoption("--matrix")
    return load_matrix(Path(path) if path else REPO / "matrix.yaml")


@pytest.fixture(scope="session")
def expected(labels: dict[str, str], matrix: Matrix) -> Expected:
    """The matrix target the image's labels name (os/python/arch from the labels for a base image)."""
    try:
        return expected_from_labels(labels, matrix)
    except UserError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="session")
def target(expected: Expected) -> Any:
    if expected.target is None:
        pytest.skip("a base image belongs to no matrix row")
    return expected.target


@pytest.fixture(scope="session")
def lock(pytestconfig: pytest.Config, target: Any) -> Lock:
    """The row's lock file: --lock-dir, else locks/ of this checkout; skip where there is none."""
    given = pytestconfig.getoption("--lock-dir")
    lock = load_lock(target.row.key, Path(given) if given else None)
    if lock is None:
        where = given or "locks/"
        pytest.skip(f"no lock file for row {target.row.key} in {where}: pass --lock-dir of the build")
    return lock


@pytest.fixture(scope="session")
def box(image: str, pytestconfig: pytest.Config) -> Iterator[containers.Container]:
    """A container of the image, started once and always removed."""
    run_args = [*npu_run_args(pytestconfig.getoption("--devices")), *pytestconfig.getoption("--docker-arg")]
    with containers.running(image, run_args) as running:
        yield running


@pytest.fixture(scope="session")
def host(box: containers.Container) -> Any:
    """A testinfra host on the container, as root: the checks must see every file, whoever owns it."""
    return testinfra.get_host(f"docker://root@{box.id}")


@pytest.fixture(scope="session")
def user_host(box: containers.Container) -> Any:
    """The same container as the image's own user (its USER): what a stage sees."""
    return testinfra.get_host(f"docker://{box.id}")


@pytest.fixture(scope="session")
def environment(host: Any) -> dict[str, str]:
    """What a fresh `docker run`/`docker exec` sees: the image's ENV, no profile read."""
    return dict(host.environment())


@pytest.fixture(scope="session")
def pip_versions(host: Any) -> dict[str, str]:
    """Installed distributions of /opt/venv by normalised name (torch-npu, not torch_npu)."""
    out = host.check_output("python -m pip list --format=json --disable-pip-version-check")
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(out)}


@pytest.fixture(scope="session")
def stack(host: Any) -> dict[str, Any]:
    f = host.file(STACK_JSON)
    if not f.exists:
        pytest.fail(f"no {STACK_JSON} in the image (the mindspeed layer writes it)")
    return dict(json.loads(f.content_string))


@pytest.fixture(scope="session")
def cann_home(expected: Expected) -> str:
    """ASCEND_TOOLKIT_HOME of the image's CANN release (its layout in matrix.yaml)."""
    return expected.target.cann_path("home") if expected.target else TOOLKIT_HOME


@pytest.fixture(scope="session")
def cann_standin(host: Any, cann_home: str) -> str | None:
    """Why the image's CANN is a test stand-in (tests/fakes), or None for a real install."""
    lib = f"{cann_home}/lib64/libascendcl.so"
    out = host.run(f"head -c 200 {lib}")
    return standin_reason(out.stdout_bytes, "libascendcl.so") if out.rc == 0 else None


@pytest.fixture(scope="session")
def npu_host(user_host: Any, cann_standin: str | None) -> Any:
    """The image's own user, for tier-2 checks (the NPUs must work without root): skipped, with the
    reason, unless NPUs and the driver are in the container."""
    host = user_host
    devices = host.run("ls /dev | grep -E '^davinci[0-9]+$'").stdout.split()
    if not devices:
        pytest.skip("no Ascend NPU here (no /dev/davinci* in the container): run tier 2 on an Ascend host")
    missing = [p for p in ("/usr/local/Ascend/driver/lib64", "/usr/local/bin/npu-smi") if not host.file(p).exists]
    if missing:
        pytest.skip(f"NPUs are present but the host driver is not mounted ({', '.join(missing)} missing)")
    if cann_standin:
        pytest.skip(f"tier 2 needs a real CANN: {cann_standin}")
    return host

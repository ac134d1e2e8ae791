"""The CPU smoke image: a built image of the chain plus stand-ins for CANN's runtime libraries and pyACL.

Test-only. :func:`build_smoke_image` builds ``FROM`` an image of the chain (the integration image, or the
real-sources test's; that image itself is left as it is) one layer that runs
``tests/fakes/cann_runtime.py`` with the image's own python: it derives from the image's torch_npu
which CANN libraries cannot be loaded and which symbols they must export, and compiles stand-ins for
them (see that module's docstring for what they model and what not). In that image ``import torch_npu``
and torchair work on a CPU, with no device, through the image's own CANN environment.

Running things in it the way a stage runs them:

* :func:`run_stage` ``(docker_client, image, "preprocess", "--format", ...)``: the image's entrypoint,
  ``ascend-llm``, with those arguments (a stage, or any plain command);
* :func:`run_python_as_stage` ``(docker_client, image, code)``: ``code`` run by ``python3`` from a launch
  script that ascend-llm composes as it does for every MindSpeed-LLM stage (``stages.base.base_script``:
  the stage environment, CANN's set_env.sh only where the image's ENV lacks it, the aarch64 libgomp
  preload, the MindSpeed-LLM working directory), run by ascend-llm's runner, through the entrypoint.

Both return a :class:`StageRun` (exit code, combined output, seconds). :func:`remove_smoke_image` removes
the image. From a shell, ``python tests/smoke.py --image TAG [--keep] [-- ARGS...]`` builds it, runs
``ARGS`` through the entrypoint if given, and prints the seconds each took (then removes it unless --keep).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENERATOR = Path(__file__).resolve().parent / "fakes" / "cann_runtime.py"
REPOSITORY = "ascend-llm-stack-smoke"
LABEL = "io.ascend-llm-stack.test-only"
STANDIN_DIR = "/opt/cann-standin"  # the generated C source and stand-ins.json (what was generated)

# Run with ``python3 -c`` by the entrypoint: compose the launch script as a stage does, run it as a stage does.
STAGE_DRIVER = """\
import sys
from ascend_llm.runner import run_script
from ascend_llm.stages.base import StageRequest, base_script, python
req = StageRequest(stage="smoke", action=None, opts={}, explicit=set(), preset=None, release=None, rdzv=None)
script = base_script(req, "CPU smoke check", [python(), "-c", sys.argv[1]], distributed=False)
sys.exit(run_script(script.render(), None))
"""


@dataclass
class StageRun:
    """What a container run gave: its exit code and its stdout+stderr."""

    exit_code: int
    output: str
    seconds: float


def smoke_tag(docker_client: Any, base_image: str) -> str:
    """A new tag naming the base image and the generator (one per build: removing it cannot hit another's)."""
    base_id = docker_client.images.get(base_image).id
    digest = hashlib.sha256(base_id.encode() + GENERATOR.read_bytes()).hexdigest()[:12]
    return f"{REPOSITORY}:{digest}-{uuid.uuid4().hex[:8]}"


def _context(user: str) -> io.BytesIO:
    """Dockerfile and generator; the generator runs as root, the image keeps the base image's user."""
    dockerfile = (
        "ARG BASE\n"
        "FROM ${BASE}\n"
        "USER root\n"
        "COPY cann_runtime.py /tmp/cann_runtime.py\n"
        f"RUN python /tmp/cann_runtime.py --out {STANDIN_DIR} && rm /tmp/cann_runtime.py\n"
        f"USER {user or 'root'}\n"
        f'LABEL {LABEL}="CPU smoke image: CANN runtime stand-ins from tests/fakes/cann_runtime.py, not CANN"\n'
    ).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile), ("cann_runtime.py", GENERATOR.read_bytes())):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def build_smoke_image(docker_client: Any, base_image: str) -> str:
    """Build the smoke image FROM ``base_image`` (classic builder, no network) and return its tag."""
    tag = smoke_tag(docker_client, base_image)
    user = docker_client.images.get(base_image).attrs["Config"].get("User") or ""
    docker_client.images.build(
        fileobj=_context(user),
        custom_context=True,
        tag=tag,
        buildargs={"BASE": base_image},
        rm=True,
        forcerm=True,
        network_mode="none",
    )
    return tag


def remove_smoke_image(docker_client: Any, tag: str) -> None:
    docker_client.images.remove(tag, force=True)


def run_stage(docker_client: Any, image: str, *argv: str, **create: Any) -> StageRun:
    """``docker run IMAGE ARGV...`` through the image's entrypoint; the container is always removed.

    ``create`` goes to ``containers.create`` (``volumes=``, ``environment=``, ...); no network unless
    ``network_mode`` says otherwise."""
    start = time.monotonic()
    container = docker_client.containers.create(image, list(argv), **{"network_mode": "none", **create})
    try:
        container.start()
        code = int(container.wait()["StatusCode"])
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)
    return StageRun(code, output, time.monotonic() - start)


def run_python_as_stage(docker_client: Any, image: str, code: str, **kwargs: Any) -> StageRun:
    """Run python ``code`` from a launch script composed as ascend-llm composes a stage's (see the module doc)."""
    return run_stage(docker_client, image, "python3", "-c", STAGE_DRIVER, code, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the CPU smoke image of IMAGE and run ARGS in it.")
    parser.add_argument("--image", required=True, help="a built image of the chain")
    parser.add_argument("--keep", action="store_true", help="keep the smoke image (its tag is printed)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- ARGS for the image's entrypoint")
    opts = parser.parse_args(argv)
    import docker

    client = docker.from_env()
    start = time.monotonic()
    tag = build_smoke_image(client, opts.image)
    print(f"smoke image {tag}: built in {time.monotonic() - start:.1f} s", file=sys.stderr)
    code = 0
    try:
        args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
        if args:
            run = run_stage(client, tag, *args)
            sys.stdout.write(run.output)
            print(f"exit {run.exit_code} after {run.seconds:.1f} s", file=sys.stderr)
            code = run.exit_code
    finally:
        if not opts.keep:
            remove_smoke_image(client, tag)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

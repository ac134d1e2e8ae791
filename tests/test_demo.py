"""``invoke demo``: one command to a built and verified test-row image, and a second run that redoes nothing.

The Docker test runs after the session's ``chain`` fixture built the test row (x86_64): the demo writes the
same stand-ins (they are deterministic), so its build must find every layer under the chain's content tags;
what it then does for real is ``invoke verify``, the sample data and ``sft --dry-run`` in the image.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chain import Chain

REPO = Path(__file__).resolve().parents[1]
GB = 1024**3


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize(("make", "said"), [
    (lambda d: d.write_text("notes"), "expected a directory (or nothing yet), found a file"),
    (lambda d: (d.mkdir(), (d / "thesis.tex").write_text("months of work")), "holds files invoke demo did not write"),
])  # fmt: skip
def test_the_demo_never_takes_over_a_folder_it_did_not_make(tmp_path: Path, make: Any, said: str) -> None:
    target = tmp_path / "d"
    make(target)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    out = invoke("demo", "--dir", str(target))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and said in out.stderr, out.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


@pytest.mark.docker
def test_the_demo_reuses_the_chain_verifies_and_runs_again_in_seconds(chain: Chain, docker_client: Any,
                                                                      tmp_path: Path) -> None:  # fmt: skip
    demo = tmp_path / "demo"
    mirrors = REPO / "sources"  # the project's git mirrors of the real upstream: no stand-in may land there
    before = sorted(p.name for p in mirrors.iterdir()) if mirrors.is_dir() else None
    first = invoke("demo", "--arch", "x86_64", "--dir", str(demo))
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert "Traceback" not in out + first.stderr
    # the stand-in notice, at the start and at the end, with what a real build needs instead
    assert out.count("The CANN inside this image is a STAND-IN") == 2 and out.count("invoke fetch --cann 8.1.RC1") == 2
    assert out.index("STAND-IN") < out.index("[1/7]") and out.rindex("STAND-IN") > out.index("Try next:")
    # the demo's build is the chain's: same content tags, nothing built
    assert "0 of 5 layers built (base up to date, cann up to date, pta up to date, mindspeed up to date, runtime " \
           "up to date)" in out  # fmt: skip
    image = chain.image  # the runtime content tag; the demo names the final human tag
    final = re.search(r"^  image   (\S+)  \((\d+\.\d\d) GB, (sha256:[0-9a-f]{12})\)$", out, re.M)
    assert final, out
    assert docker_client.images.get(final[1]).id == docker_client.images.get(image).id
    assert docker_client.images.get(final[1]).id.startswith(final[3])
    assert re.search(r"^  verify  PASS: tier 1: \d+ passed", out, re.M) and "(recorded" not in out
    commands = out[out.index("Try next:") :].splitlines()[1:4]
    assert commands[0] == f"  docker run --rm {final[1]} --help" and commands[2] == "  invoke render --cann 8.1.RC1"
    assert commands[1].startswith(f"  docker run --rm -v {demo / 'sample'}:/sample {final[1]} sft --dry-run --model ")
    # the sft command runs on the sample data; its preflight is real, so a short disk is what it says
    free = shutil.disk_usage(demo / "sample").free
    if free > 8.5 * GB:
        assert re.search(r"\[7/7\] sft --dry-run +prints the \d+-line launch script", out), out
    elif free < 7.5 * GB:
        assert "stops at its preflight check: --save /sample/out: needs about 7.8 GB" in out, out
    for name in ("input_ids", "attention_mask", "labels"):
        for ext in ("bin", "idx"):
            assert (demo / "sample" / "data" / f"alpaca_packed_{name}_document.{ext}").stat().st_size > 0
    assert os.stat(demo / "sample" / "out").st_uid in (1000, os.getuid())
    assert (sorted(p.name for p in mirrors.iterdir()) if mirrors.is_dir() else None) == before

    again = invoke("demo", "--arch", "x86_64", "--dir", str(demo))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 of 5 layers built" in again.stdout and "(written earlier)" in again.stdout
    assert re.search(r"^  verify  PASS: .*\(recorded for this image ID\)$", again.stdout, re.M), again.stdout
    again_commands = again.stdout[again.stdout.index("Try next:") :].splitlines()[1:4]
    assert [c.split("    # here it")[0] for c in again_commands] == [c.split("    # here it")[0] for c in commands]

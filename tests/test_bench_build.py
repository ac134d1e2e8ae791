"""bench/build_bench.py's own logic, without an engine: BuildKit step times, the streamed waste walk, the sweep."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from test_bench_wasted import _layer_tar

from ascend_stack import wasted

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> Any:
    spec = importlib.util.spec_from_file_location("build_bench", REPO / "bench" / "build_bench.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_bench"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


LOG = """\
#1 [internal] load build definition from Dockerfile
#1 transferring dockerfile: 1.74kB done
#1 DONE 0.0s
#5 [internal] load build context
#5 transferring context: 750.30MB 10.6s done
#5 DONE 10.6s
#6 [2/4] RUN --mount=type=bind,source=packages,target=/mnt/packages     bash /mnt/packages/t.run
#6 0.120 installing
#6 DONE 3.1s
#7 [torch 2/2] RUN pip install torch
#7 DONE 20.5s
#8 [stage-2 3/5] COPY sources/mindspeed /opt/MindSpeed
#8 DONE 0.4s
#9 [stage-2 4/5] WORKDIR /opt
#9 CACHED
#10 exporting to image
#10 exporting layers
#10 exporting layers 2.0s done
#10 DONE 2.1s
"""


def test_step_seconds_sorts_buildkit_steps_by_kind(bench: Any) -> None:
    steps = bench.step_seconds(LOG.splitlines())
    assert steps["context"] == [("[internal] load build context", 10.6)]
    assert [s for _, s in steps["run"]] == [3.1, 20.5]
    assert [n for n, _ in steps["copy"]] == ["[stage-2 3/5] COPY sources/mindspeed /opt/MindSpeed"]
    assert steps["export"] == [("exporting to image", 2.1)]
    assert steps["other"] == [("[internal] load build definition from Dockerfile", 0.0)]  # CACHED steps take none


class _Image:
    """What measure_waste asks of a docker SDK image: its diffIDs and its ``docker save`` stream."""

    def __init__(self, archive: bytes, diff_ids: list[str]) -> None:
        self.archive, self.attrs = archive, {"RootFS": {"Layers": diff_ids}}

    def save(self, chunk_size: int, named: bool) -> Any:
        return (self.archive[i : i + 7] for i in range(0, len(self.archive), 7))  # odd chunks, on purpose


def test_the_streamed_waste_walk_equals_the_archive_walk(bench: Any, tmp_path: Path) -> None:
    layers = [_layer_tar([("tmp", None), ("tmp/cann.run", 4000), ("etc/a", 10)]), _layer_tar([("tmp/.wh.cann.run", 0)]),
              _layer_tar([("etc/a", 3)])]  # fmt: skip
    names = [f"{i:064x}/layer.tar" for i in range(3)]
    config = {"history": [{"created_by": "ADD rootfs"}, {"created_by": "ENV X=1", "empty_layer": True},
                          {"created_by": "RUN rm /tmp/cann.run"}, {"created_by": "RUN echo 3 > /etc/a"}]}  # fmt: skip
    config_name = hashlib.sha256(json.dumps(config).encode()).hexdigest() + ".json"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as outer:
        members = [*zip(names, layers, strict=True), (config_name, json.dumps(config).encode()),
                   ("manifest.json", json.dumps([{"Config": config_name, "Layers": names}]).encode())]  # fmt: skip
        for name, data in reversed(members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            outer.addfile(info, io.BytesIO(data))
    (tmp_path / "image.tar").write_bytes(buf.getvalue())
    diff_ids = [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers]

    class Docker:
        images = type("Images", (), {"get": staticmethod(lambda _id: _Image(buf.getvalue(), diff_ids))})

    report, commands = bench.measure_waste(Docker(), "sha256:x")
    expected = wasted.wasted_bytes(tmp_path / "image.tar")
    assert (report.wasted, report.total, report.layer_bytes) == (expected.wasted, expected.total, expected.layer_bytes)
    assert report.wasted == 4010
    assert commands == ["ADD rootfs", "RUN rm /tmp/cann.run", "RUN echo 3 > /etc/a"]


def test_the_sweep_reports_each_point_and_the_slope_per_gb(bench: Any) -> None:
    def point(mb: int, ours: float, naive: float) -> Any:
        size = {"ours": 2_000_000_000 + 3 * mb * 1_000_000, "naive": 3_000_000_000 + 6 * mb * 1_000_000}
        waste = {"ours": 9_000_000, "naive": 250_000_000 + 3 * mb * 1_000_000}
        return bench.SweepPoint(mb, ours, naive, size, waste, (1.0, 1.5))

    points = [point(250, 100.0, 120.0), point(1000, 130.0, 180.0)]
    assert bench.slope([0.75, 3.0], [100.0, 130.0]) == pytest.approx(30 / 2.25)
    assert bench.slope([1.0, 1.0], [1.0, 2.0]) is None
    client = type("Client", (), {"version": "20.10.24"})()
    text = bench.sweep_table(points, client, "abc")
    assert "| 250 MB (0.75 GB) | 100 s | 2 min 00 s | 2.75 GB | 4.50 GB | 9.0 MB | 1.00 GB |" in text
    slope_row = text.splitlines()[-1]
    assert slope_row.startswith(
        "| **slope, per GB of installers** | 13.3 s | 26.7 s | 1.00 GB | 2.00 GB | 0 B | 1.00 GB |"
    )
    assert "load average (1 min) 1.0 to 1.5" in text


def test_the_pull_cost_is_measured_by_default_but_not_in_a_sweep(bench: Any) -> None:
    assert bench.parse_args([]).pull_cost is True
    assert bench.parse_args(["--no-pull-cost"]).pull_cost is False
    sweep = bench.parse_args(["--sweep", "2000,250,1000,250"])
    assert (sweep.sweep, sweep.pull_cost) == ([250, 1000, 2000], False)
    with pytest.raises(SystemExit):
        bench.parse_args(["--sweep", "250", "--pull-cost"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--prune-cache"])  # it goes with --sweep only


def test_the_table_gives_each_target_its_verdict(bench: Any) -> None:
    from types import SimpleNamespace as NS

    def ours(seconds: float, statuses: list[str], builds: int) -> Any:
        names = ["base", "cann", "pta", "mindspeed", "runtime"]
        results = [NS(name=n, status=s, image_id=f"sha256:{n}") for n, s in zip(names, statuses, strict=True)]
        return bench.Ours(seconds, results, builds)

    def naive(seconds: float, total: int, rerun: int) -> Any:
        steps = bench.Steps(total, [(i, total, "COPY sources/mindspeed-llm /opt/MindSpeed-LLM") for i in range(rerun)])
        return bench.NaiveBuild(seconds, "sha256:n", steps)

    target = NS(cann="8.2.RC1", torch="2.13.0", torch_npu="2.13.0", row=NS(mindspeed_llm=NS(release="2.1.0")),
                os_name="debian-bookworm", python="3.11", arch="x86_64")  # fmt: skip
    report = bench.WasteReport(layers=["sha256:a"], layer_bytes=[2_400_000_000])
    m = bench.Measured(
        "seed", 250 * bench.MB, target, NS(version="20.10.24"),
        ours(100.0, ["built"] * 5, 7), ours(0.3, ["up to date"] * 5, 0),
        ours(4.0, ["up to date"] * 3 + ["built"] * 2, 2),
        naive(120.0, 26, 26), [naive(0.3, 26, 0)] * 5, naive(40.0, 26, 6),
        {"ours": 2_400_000_000, "naive": 3_800_000_000}, {"ours": report, "naive": report},
        {"ours": [], "naive": []}, {"ours": (5, 18), "naive": (5, 27)}, (1.0, 1.2),
        {"ours": (1.0, 1.1), "naive": (1.1, 1.2)}, False,
        bench.WholeCommand([0.3, 0.25, 0.6, 0.28, 0.31], [0] * 5, 1.9, 0),
    )  # fmt: skip
    rows = {line.split(" | ")[0]: line for line in bench.table(m).splitlines() if line.startswith("| ")}
    assert "**met** (0.83 x)" in rows["| cold build (`--no-cache`, payload new to this run)"]
    assert "load 1.0 to 1.1, built first" in rows["| cold build (`--no-cache`, payload new to this run)"]
    whole = rows["| no-op rebuild, the whole command (median of 5)"]
    assert "`invoke build`: 0.30 s" in whole and "**met**" in whole
    change = rows["| rebuild after a MindSpeed-LLM ref change"]
    assert "rebuilt mindspeed, runtime (2 docker builds)" in change and "**met** (0.10 x)" in change
    m.whole = bench.WholeCommand([0.3] * 5, [0, 0, 1, 0, 0], 1.9, 0)  # one run built: the target is missed
    assert "**missed**" in next(line for line in bench.table(m).splitlines() if "the whole command" in line)

"""Loss curves of a training step, read from its TensorBoard event files and drawn as a PNG.

Megatron writes scalars with ``torch.utils.tensorboard.SummaryWriter`` (``lm loss`` per iteration).
They are read with TensorBoard's own event-file reader and drawn with matplotlib's Agg canvas (no
display, no pyplot state). Both are imported only here, so the stage runner works without them;
they come with ``pip install 'ascend-llm[image]'``. Only events written since the step first started
with its current inputs count: a rerun after a data change must not draw the old run's curve, and a
run stopped and continued draws one curve, with the point where it continued marked.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Any

PREFERRED = ("lm loss",)


class CurvesUnavailable(Exception):
    """tensorboard or matplotlib is not installed here."""


@dataclass
class Series:
    tag: str
    points: dict[int, float] = field(default_factory=dict)
    resumed_at: list[int] = field(default_factory=list)


def _value(value: Any) -> float | None:
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor"):
        from tensorboard.util import tensor_util

        array = tensor_util.make_ndarray(value.tensor)
        return float(array.reshape(-1)[0]) if array.size == 1 else None
    return None


def loss_tags(tags: list[str]) -> list[str]:
    """``lm loss`` when present, else the per-iteration tags that are losses (not loss-scale, not 'vs')."""
    preferred = [t for t in PREFERRED if t in tags]
    if preferred:
        return preferred
    return sorted(t for t in tags if "loss" in t.lower() and "scale" not in t.lower() and " vs " not in t)


def read_losses(directory: str, since: float = 0.0) -> list[Series]:
    """The loss series under ``directory`` written at or after ``since`` (seconds since the epoch)."""
    try:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    except ImportError as exc:
        raise CurvesUnavailable(f"tensorboard is not installed ({exc.name})") from None
    files = sorted(glob.glob(os.path.join(glob.escape(directory), "**", "*tfevents*"), recursive=True))
    raw: dict[str, list[tuple[int, float, str]]] = {}
    for path in files:
        for event in EventFileLoader(path).Load():
            if event.wall_time < since or not event.HasField("summary"):
                continue
            for value in event.summary.value:
                number = _value(value)
                if number is not None:
                    raw.setdefault(value.tag, []).append((int(event.step), number, path))
    series = []
    for tag in loss_tags(list(raw)):
        one = Series(tag)
        first_file = raw[tag][0][2] if raw[tag] else None
        starts: dict[str, int] = {}
        for step, number, path in raw[tag]:
            one.points[step] = number  # a later event for the same iteration wins
            starts.setdefault(path, step)
        one.resumed_at = sorted(step for path, step in starts.items() if path != first_file)
        series.append(one)
    return series


def draw(series: list[Series], png: str, title: str) -> None:
    """One PNG with every series, written atomically."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise CurvesUnavailable(f"matplotlib is not installed ({exc.name})") from None
    figure = Figure(figsize=(8, 4.5), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for one in series:
        steps = sorted(one.points)
        values = [one.points[s] for s in steps]
        axes.plot(steps, values, linewidth=1.6, marker="o" if len(steps) <= 40 else None, markersize=3,
                  label=_plain(one.tag))  # fmt: skip
        for step in one.resumed_at:
            axes.axvline(step, color="grey", linestyle="--", linewidth=1)
            axes.annotate(f"continued at {step}", (step, max(values)), textcoords="offset points", xytext=(4, -12),
                          fontsize=8, color="grey")  # fmt: skip
    axes.set_title(_plain(title))
    axes.set_xlabel("iteration")
    axes.set_ylabel(_plain(series[0].tag) if len(series) == 1 else "loss")
    axes.grid(True, alpha=0.3)
    if len(series) > 1:
        axes.legend()
    figure.tight_layout()
    tmp = png + ".tmp"
    with open(tmp, "wb") as handle:
        figure.savefig(handle, format="png")
    os.replace(tmp, png)


def _plain(text: str) -> str:
    """matplotlib reads $...$ as math; show user text as it is."""
    return str(text).replace("$", r"\$")

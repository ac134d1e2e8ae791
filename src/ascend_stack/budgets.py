"""Size budgets: what each layer of a target is expected to add, and the check ``invoke build`` makes.

Why: image size is what every pull to every node pays, and it grows one "small" dependency at a time.
``budgets.yaml`` (beside matrix.yaml) records each layer's expected size per target, measured from a
build; a layer past :data:`LIMIT` (120 %) of its budget fails the build with the layer, its size,
the budget and the five largest paths it added, so the cause is in the message.

A layer's size is what it adds over its parent: ``docker image inspect`` Size of its image minus
that of its parent image (the OS image for ``base``), uncompressed, as ``docker images`` shows it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import UserError

FILE = "budgets.yaml"
LIMIT = 1.2
SCHEMA = 1
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)?\s*$", re.IGNORECASE)


def parse_size(text: object) -> int | None:
    """``790 MB`` / ``1.2 GB`` / ``512 MiB`` / a number of bytes -> bytes; None if it is not a size."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text if text >= 0 else None
    m = _SIZE.match(str(text))
    if m is None:
        return None
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def fmt_size(n: int) -> str:
    """Decimal units, as ``docker images`` prints them: 790.1 MB, 2.04 GB."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class Budgets:
    """``budgets.yaml``: row -> target key (``<os>-<chip>-torch<ver>-<arch>``) -> layer -> bytes."""

    path: Path
    limit: float
    targets: dict[str, dict[str, dict[str, int]]]

    def budget(self, row: str, target: str, layer: str) -> int | None:
        return self.targets.get(row, {}).get(target, {}).get(layer)

    def where(self, row: str, target: str, layer: str) -> str:
        return f"{self.path.name} [{row} {target} {layer}]"


def load(path: Path) -> Budgets | None:
    """The budgets file, or None when there is none; a malformed one is one line naming the entry."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({getattr(exc, 'problem', exc)})") from None

    def bad(where: str, what: str) -> UserError:
        return UserError(f"{path}: {where}: {what}")

    if not isinstance(data, dict) or data.get("schema", SCHEMA) != SCHEMA:
        raise bad("schema", f"expected a mapping with schema: {SCHEMA}")
    limit = data.get("limit", LIMIT)
    if not isinstance(limit, (int, float)) or isinstance(limit, bool) or limit < 1:
        raise bad("limit", f"{limit!r} is not a factor >= 1 (1.2 = fail past 120 % of the budget)")
    targets: dict[str, dict[str, dict[str, int]]] = {}
    for row, per_target in (data.get("targets") or {}).items():
        if not isinstance(per_target, dict):
            raise bad(f"targets.{row}", "expected target keys such as debian-bookworm-910b-torch2.13.0-x86_64")
        for target, layers in per_target.items():
            if not isinstance(layers, dict):
                raise bad(f"targets.{row}.{target}", "expected layer: size entries such as base: 790 MB")
            for layer, size in layers.items():
                n = parse_size(size)
                if n is None or n == 0:
                    raise bad(f"targets.{row}.{target}.{layer}", f"{size!r} is not a size such as 790 MB")
                targets.setdefault(str(row), {}).setdefault(str(target), {})[str(layer)] = n
    return Budgets(path, float(limit), targets)


@dataclass(frozen=True)
class Measure:
    """One layer's size against its budget."""

    layer: str
    size: int
    budget: int | None
    limit: float = LIMIT

    @property
    def over(self) -> bool:
        return self.budget is not None and self.size > self.budget * self.limit

    def describe(self) -> str:
        """``790.1 MB of 800.0 MB (99 %)`` or ``790.1 MB (no budget)``."""
        if self.budget is None:
            return f"{fmt_size(self.size)} (no budget)"
        return f"{fmt_size(self.size)} of {fmt_size(self.budget)} ({100 * self.size / self.budget:.0f} %)"


class OverBudget(UserError):
    """A layer grew past its budget's limit; the build built it, but fails."""

    exit_code = 1


def over_budget_message(m: Measure, where: str, largest: list[tuple[str, int]]) -> str:
    """One line: the layer, its size, the budget and limit, where the budget is, the largest paths it added."""
    assert m.budget is not None
    paths = ", ".join(f"/{p} ({fmt_size(n)})" for p, n in largest) or "none found"
    return (
        f"layer {m.layer} is {fmt_size(m.size)}, over {100 * m.limit:.0f} % of its budget {fmt_size(m.budget)} "
        f"({where}); the largest paths it added: {paths}; slim the layer, or raise the budget if the growth is wanted"
    )

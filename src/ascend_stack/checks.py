"""Cross-checks: the rules between matrix fields that catch real incompatibilities before a build.

Each rule returns :class:`~ascend_stack.matrix.Problem` values naming the row, the field and the
rule, so ``invoke matrix --check`` can list them all and every other task can refuse with one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from packaging.version import Version

from . import published
from .matrix import Matrix, Problem, Row

Rule = Callable[[Matrix], Iterator[Problem]]


def _py(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def _in_range(version: str, lo_hi: tuple[str, str]) -> bool:
    return _py(lo_hi[0]) <= _py(version) <= _py(lo_hi[1])


def references(m: Matrix) -> Iterator[Problem]:
    """Names used in one place must be defined in another."""
    if m.defaults.os not in m.oses:
        yield Problem(None, "defaults.os", f"'{m.defaults.os}' is not defined under oses")
    for i, lay in enumerate(m.cann_layouts):
        if m.defaults.chip not in lay.kernels:
            yield Problem(None, f"cann_layouts[{i}].kernels", f"the default chip '{m.defaults.chip}' has no package")
    for key, src in m.python_sources.items():
        if not src.version.startswith(key + "."):
            yield Problem(None, f"python_sources.{key}.version", f"{src.version} is not a {key}.x release")
    seen: set[str] = set()
    since = [lay.since for lay in m.cann_layouts]
    if len(set(since)) != len(since):
        yield Problem(None, "cann_layouts", f"two layouts start at the same release ({', '.join(since)})")
    for row in m.rows:
        if row.key.lower() in seen:
            yield Problem(row.key, "cann", "two rows have this CANN version; give one an 'id'")
        seen.add(row.key.lower())
        for os_name in row.oses:
            if os_name not in m.oses:
                yield Problem(row.key, "oses", f"'{os_name}' is not defined under oses ({', '.join(m.oses)})")
        try:
            layout = m.layout(row.cann)
        except ValueError as err:
            yield Problem(row.key, "cann", str(err))
            continue
        for chip in row.chips:
            if chip not in layout.kernels:
                yield Problem(
                    row.key, "chips", f"'{chip}' has no package in the CANN {layout.since}+ layout (cann_layouts)"
                )


def torch_pairing(m: Matrix) -> Iterator[Problem]:
    """torch_npu X.Y.Z[.postN|rcN] is built against torch X.Y.Z exactly."""
    for row in m.rows:
        for i, v in enumerate(row.torch.variants):
            wants = Version(v.torch_npu).base_version
            if Version(v.torch) != Version(wants):
                yield Problem(
                    row.key,
                    f"torch.variants[{i}].torch_npu",
                    f"torch_npu {v.torch_npu} requires torch {wants}, but the variant pins torch {v.torch}",
                )
            if v.torch not in m.support.torch:
                yield Problem(row.key, f"torch.variants[{i}].torch", f"torch {v.torch} is not in support.torch")


def python_provided(m: Matrix) -> Iterator[Problem]:
    """Every row and OS gets its Python either from the OS or from a pinned source release."""
    for row in m.rows:
        for os_name in row.oses:
            spec = m.oses.get(os_name)
            if spec and spec.python != row.python and row.python not in m.python_sources:
                yield Problem(
                    row.key,
                    "python",
                    f"{os_name} ships Python {spec.python} and python_sources has no {row.python}",
                )


def _upstream(row: Row, m: Matrix) -> Iterator[Problem]:
    cann_py = m.support.cann_python.get(row.cann)
    if cann_py is None:
        yield Problem(row.key, "cann", f"no Python range for CANN {row.cann} in support.cann_python")
    elif not _in_range(row.python, cann_py):
        yield Problem(row.key, "python", f"CANN {row.cann} supports Python {cann_py[0]}-{cann_py[1]}")
    pub = published.load()
    listed = sorted({*m.support.torch_npu.get(row.cann, []), *pub.paired_with(row.cann)}, key=Version)
    for i, v in enumerate(row.torch.variants):
        torch_sup = m.support.torch.get(v.torch)
        if torch_sup and not _in_range(row.python, torch_sup.python):
            lo, hi = torch_sup.python
            yield Problem(row.key, "python", f"torch {v.torch} supports Python {lo}-{hi}, not {row.python}")
        official = pub.cann_for(v.torch_npu)
        if official is not None:
            if official != row.cann and not v.unlisted:
                paired = ", ".join(pub.paired_with(row.cann)) or "none"
                yield Problem(
                    row.key,
                    f"torch.variants[{i}].torch_npu",
                    f"torch_npu {v.torch_npu} pairs with CANN {official}, not {row.cann}, in Huawei's published "
                    f"pairing ({pub.source}, version_match.json); CANN {row.cann} pairs with {paired}, "
                    f"or set 'unlisted' with a reason",
                )
        elif v.torch_npu not in listed and not v.unlisted:
            yield Problem(
                row.key,
                f"torch.variants[{i}].torch_npu",
                f"torch_npu {v.torch_npu} is not listed for CANN {row.cann} "
                f"({', '.join(listed) or 'none listed'}); pick one of those or set 'unlisted' with a reason",
            )
    release = m.support.mindspeed_llm.get(row.mindspeed_llm.release)
    if release is None:
        yield Problem(
            row.key,
            "mindspeed_llm.release",
            f"{row.mindspeed_llm.release} is not in support.mindspeed_llm ({', '.join(m.support.mindspeed_llm)})",
        )
        return
    if row.megatron.ref != release.megatron:
        yield Problem(
            row.key,
            "megatron.ref",
            f"MindSpeed-LLM {row.mindspeed_llm.release} names Megatron-LM {release.megatron}, not {row.megatron.ref}",
        )
    if not _in_range(row.python, release.python):
        lo, hi = release.python
        yield Problem(row.key, "python", f"MindSpeed-LLM {row.mindspeed_llm.release} supports Python {lo}-{hi}")


def hand_pairings(m: Matrix) -> Iterator[Problem]:
    """support.torch_npu is for releases Huawei's published pairing does not cover; it may not contradict it."""
    pub = published.load()
    for cann, versions in m.support.torch_npu.items():
        for version in versions:
            official = pub.cann_for(version)
            if official is not None:
                yield Problem(
                    None,
                    f"support.torch_npu.{cann}",
                    f"torch_npu {version} is in Huawei's published pairing ({pub.source}: CANN {official}): "
                    "remove it here, the published data is the source",
                )


def upstream_support(m: Matrix) -> Iterator[Problem]:
    """Shipped rows stay inside what CANN, torch, torch_npu and MindSpeed-LLM document."""
    for row in m.shipped_rows():
        yield from _upstream(row, m)


def source_pins(m: Matrix) -> Iterator[Problem]:
    """A shipped row builds the same sources every time: each git source is pinned to a full commit.

    A branch such as MindSpeed-LLM's ``2.1.0`` moves (64 commits past the tag the seed guide used);
    only a commit makes two builds a month apart the same. Test rows build stand-ins and may float.
    """
    for row in m.shipped_rows():
        for name, src in row.git_sources().items():
            if src.commit is None:
                yield Problem(
                    row.key,
                    f"{name}.commit",
                    f"pin {name} ({src.ref}) to a full 40-hex commit: a shipped row never builds a moving ref "
                    f"(`git ls-remote {getattr(m.sources, name)} {src.ref}` shows its current commit)",
                )


RULES: tuple[Rule, ...] = (references, torch_pairing, python_provided, hand_pairings, upstream_support, source_pins)


def cross_check(m: Matrix) -> list[Problem]:
    return [p for rule in RULES for p in rule(m)]

"""Check Megatron indexed-dataset files (``.bin``/``.idx``) and the prefixes stages expect.

Only headers and two numbers per file are read, so this stays fast on data sets of any size.
The ``.idx`` layout (Megatron ``_IndexWriter``): magic ``MMIDIDX\\0\\0``, version ``<Q`` (1),
dtype code ``<B``, sequence count ``<Q``, document count ``<Q``, then int32 sizes,
int64 pointers and int64 document indices.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"MMIDIDX\x00\x00"
HEADER = len(MAGIC) + 8 + 1 + 8 + 8
DTYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 8, 7: 4, 8: 2}
PACKED_KEYS = ("input_ids", "attention_mask", "labels")
PRETRAIN_SUFFIX = "_text_document"
_PACKED_RE = re.compile(r"^(?P<prefix>.*)_packed_(?P<key>[a-z_]+?)_document$")


@dataclass
class IndexInfo:
    """What the header of one ``.idx`` says."""

    sequences: int
    documents: int
    dtype_size: int


def read_index(prefix: str) -> tuple[IndexInfo | None, str | None]:
    """Read ``prefix.idx`` and check it against ``prefix.bin``; (info, None) or (None, problem)."""
    idx, binf = prefix + ".idx", prefix + ".bin"
    try:
        with open(idx, "rb") as handle:
            head = handle.read(HEADER)
            if len(head) < HEADER or not head.startswith(MAGIC):
                return None, f"{idx} is not a Megatron indexed-dataset index (bad header)"
            version, code, sequences, documents = struct.unpack("<QBQQ", head[len(MAGIC) :])
            if version != 1 or code not in DTYPE_SIZES:
                return None, f"{idx}: unsupported index version {version} / dtype code {code}"
            size = os.fstat(handle.fileno()).st_size
            needed = HEADER + 4 * sequences + 8 * sequences + 8 * documents
            if size < needed:
                return None, (
                    f"{idx} is truncated ({size} bytes, header promises {needed}): "
                    f"preprocessing did not finish; run it again"
                )
            expected_bin = 0
            if sequences:
                handle.seek(HEADER + 4 * (sequences - 1))
                (last_size,) = struct.unpack("<i", handle.read(4))
                handle.seek(HEADER + 4 * sequences + 8 * (sequences - 1))
                (last_pointer,) = struct.unpack("<q", handle.read(8))
                expected_bin = last_pointer + last_size * DTYPE_SIZES[code]
    except OSError as exc:
        return None, f"{idx}: cannot read ({exc.strerror})"
    try:
        bin_size = os.path.getsize(binf)
    except OSError:
        return None, f"{binf} is missing (its .idx exists): preprocessing did not finish; run it again"
    if bin_size != expected_bin:
        return None, (
            f"{binf} has {bin_size} bytes but its .idx describes {expected_bin}: "
            f"the pair does not belong together or was cut short; preprocess again"
        )
    return IndexInfo(sequences, documents, DTYPE_SIZES[code]), None


def _exists(prefix: str) -> bool:
    return os.path.exists(prefix + ".bin") or os.path.exists(prefix + ".idx")


def _strip_ext(path: str) -> str:
    for ext in (".bin", ".idx"):
        if path.endswith(ext):
            return path[: -len(ext)]
    return path


def packed_prefixes_in(directory: str) -> list[str]:
    """Bare prefixes of the instruction data sets (``*_packed_input_ids_document.idx``) in a dir."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    suffix = "_packed_input_ids_document.idx"
    return sorted(os.path.join(directory, n[: -len(suffix)]) for n in names if n.endswith(suffix))


def check_pretrain_data(data: str) -> list[str]:
    """``--data`` of pretrain must be ``<prefix>_text_document`` (with the suffix)."""
    path = _strip_ext(data)
    if path != data:
        return [f"--data {data}: pass the prefix without the extension: --data {path}"]
    match = _PACKED_RE.match(path)
    if match or packed_prefixes_in(path) or all(_exists(f"{path}_packed_{k}_document") for k in PACKED_KEYS):
        return [
            f"--data {data} is instruction data (preprocess --format alpaca/sharegpt/openai); "
            f"pretrain needs `ascend-llm preprocess --format pretrain` output (<prefix>_text_document)"
        ]
    if not path.endswith(PRETRAIN_SUFFIX) and _exists(path + PRETRAIN_SUFFIX):
        return [f"--data {data}: pretrain wants the suffix: pass --data {path}{PRETRAIN_SUFFIX}"]
    if not _exists(path):
        hint = f"run `ascend-llm preprocess --format pretrain --output-prefix P ...` and pass --data P{PRETRAIN_SUFFIX}"
        return [f"--data {data}: no {path}.bin/.idx; {hint}"]
    _, problem = read_index(path)
    return [problem] if problem else []


def check_packed_data(data: str, stage: str) -> list[str]:
    """``--data`` of sft/lora must be the bare prefix of the three ``_packed_*_document`` pairs."""
    path = _strip_ext(data)
    match = _PACKED_RE.match(path)
    if match:
        return [f"--data {data}: {stage} wants the bare prefix: pass --data {match.group('prefix')}"]
    if os.path.isdir(path):
        found = packed_prefixes_in(path)
        if len(found) == 1:
            return [f"--data {data} is a directory: pass the prefix --data {found[0]}"]
        if found:
            return [f"--data {data} is a directory with several data sets; pass one of: {', '.join(found)}"]
    if path.endswith(PRETRAIN_SUFFIX) or (
        not any(_exists(f"{path}_packed_{k}_document") for k in PACKED_KEYS) and _exists(path + PRETRAIN_SUFFIX)
    ):
        return [
            f"--data {data} is pretraining data; {stage} needs "
            f"`ascend-llm preprocess --format alpaca|sharegpt|openai` output (a bare <prefix>)"
        ]
    if path != data:
        return [f"--data {data}: pass the bare prefix --data {path}"]
    missing = [k for k in PACKED_KEYS if not _exists(f"{path}_packed_{k}_document")]
    if len(missing) == len(PACKED_KEYS):
        return [
            f"--data {data}: no {path}_packed_{{input_ids,attention_mask,labels}}_document.bin/.idx; "
            f"run `ascend-llm preprocess --format alpaca|sharegpt|openai --output-prefix {path} ...`"
        ]
    if missing:
        return [
            f"--data {data}: {', '.join(f'{path}_packed_{k}_document' for k in missing)} missing; "
            f"preprocessing did not finish, run it again"
        ]
    problems: list[str] = []
    counts: dict[str, int] = {}
    for key in PACKED_KEYS:
        info, problem = read_index(f"{path}_packed_{key}_document")
        if problem:
            problems.append(problem)
        elif info:
            counts[key] = info.sequences
    if not problems and len(set(counts.values())) > 1:
        detail = ", ".join(f"{k} {v}" for k, v in counts.items())
        problems.append(
            f"--data {data}: the packed files disagree on the number of samples ({detail}); "
            f"they come from different runs; preprocess again"
        )
    return problems


def output_prefix_problem(prefix: str, fmt: str) -> str | None:
    """preprocess appends the suffixes itself; refuse a prefix that already carries one."""
    stripped = _strip_ext(prefix)
    if stripped.endswith(PRETRAIN_SUFFIX):
        return (
            f"--output-prefix {prefix}: pass it without {PRETRAIN_SUFFIX}: preprocessing appends it "
            f"(--output-prefix {stripped[: -len(PRETRAIN_SUFFIX)]})"
        )
    match = _PACKED_RE.match(stripped)
    if match:
        return (
            f"--output-prefix {prefix}: pass the bare prefix --output-prefix {match.group('prefix')}: "
            f"preprocessing appends _packed_*_document"
        )
    if stripped != prefix:
        return f"--output-prefix {prefix}: pass it without the extension (--output-prefix {stripped})"
    if os.path.isdir(prefix):
        return (
            f"--output-prefix {prefix} is a directory; name the files: --output-prefix "
            f"{Path(prefix) / ('data' if fmt == 'pretrain' else fmt)}"
        )
    return None

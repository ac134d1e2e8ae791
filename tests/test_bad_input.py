"""The bad-input table: careless and hostile requests to both command lines, as a user types them.

Every case must end with exit code 2 (a refusal; the rule is >= 1), exactly one line on stderr that
names the option and what to do, no traceback, nothing on stdout, and nothing written or deleted
anywhere the command could write (the case's scratch tree, the repository's build/ and locks/).
``invoke`` runs as a subprocess from the repository root (its tasks.py); ``ascend-llm`` runs
in-process on real data, checkpoint and model trees (tests/entrypoints/stagekit.py) in a clean,
NPU-less machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "entrypoints", REPO / "tests" / "entrypoints"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from stagekit import LAUNCHER_VARS, World, run_cli  # noqa: E402

IMAGE = "registry.local:5000/ascend-llm-stack:8.1.rc1-910b-torch2.1.0-mslm2.1.0-ubuntu22.04-py3.10-aarch64"


@dataclass(frozen=True)
class Case:
    """``argv`` with ``{W}`` (the world: data, checkpoints, model) and ``{T}`` (scratch) placeholders."""

    argv: tuple[str, ...]
    option: str  # the option the one line must name
    fix: str  # a fragment of what the line says to do (or what it found)


SFT = ("sft", "--model", "qwen3-14b", "--load", "{W}/mcore_tp8pp1", "--save", "{T}/out", "--data",
       "{W}/data/alpaca", "--tokenizer", "{W}/Qwen3-14B", "--dry-run")  # fmt: skip
PREP = ("preprocess", "--tokenizer", "{W}/Qwen3-14B", "--output-prefix", "{T}/prep/o", "--dry-run")
ACC = ("evaluate", "--task", "accuracy", "--load", "{W}/Qwen3-14B", "--dry-run")
GEN = ("generate", "--model", "qwen3-14b", "--load", "{W}/mcore_tp4pp1", "--tokenizer", "{W}/Qwen3-14B", "--dry-run")


def sft(*change: str, option: str, fix: str) -> Case:
    """The passing sft command line with options replaced or added."""
    argv = list(SFT)
    extra: list[str] = []
    pairs = list(change)
    while pairs:
        flag = pairs.pop(0)
        if flag == "--":
            extra = ["--", *pairs]
            break
        value = pairs.pop(0)
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return Case((*argv, *extra), option, fix)


def prep(fmt: str, data: str, *more: str, option: str = "--input", fix: str) -> Case:
    return Case((*PREP, "--format", fmt, "--input", data, *more), option, fix)


def k8s(*more: str, stage: tuple[str, ...] = ("check",), option: str, fix: str) -> Case:
    return Case(("k8s", "--image", IMAGE, "--nodes", "2", "--kind", "volcano", *more, "--", *stage), option, fix)


def run(*more: str, image: str = IMAGE, option: str, fix: str) -> Case:
    return Case(("run", "--image", image, *more, "--print", "--", "check"), option, fix)


def build(*more: str, option: str, fix: str) -> Case:
    return Case(("build", "--cann", "8.1.RC1", "--dry-run", *more), option, fix)


def render(*more: str, option: str, fix: str) -> Case:
    return Case(("render", "--cann", "8.1.RC1", *more), option, fix)


# fmt: off
ALPACA, MAP = "{T}/alpaca.jsonl", "--map-keys"
ASCEND_CASES = [
    # a layout no checkpoint can have: one line saying so, not "re-shard to TP3" first (the class 6)
    sft("--tp", "3", "--nproc-per-node", "3", "--seq-length", "4095", option="--tp 3", fix="use --tp in [1, 2, 4, 8]"),
    sft("--pp", "3", "--nproc-per-node", "24", option="--pp 3", fix="use one of [1, 2, 4, 5, 8, 10]"),
    sft("--split", "100,0", option="--split", fix="three non-negative numbers"),
    sft("--split", "100,-1,0", option="--split", fix="e.g. --split 100,0,0"),
    sft("--split", "a,b,c", option="--split", fix="three non-negative numbers"),
    sft("--split", "0,50,50", option="--split", fix="train share above 0"),
    sft("--seq-length", "81920", option="--seq-length 81920", fix="use --seq-length 40960 or less"),
    sft("--save", "{T}/a-file", option="--save", fix="expected a directory, found a file"),
    sft("--save", "{T}/a-file/sub", option="--save", fix="is a file, so nothing can be created under it"),
    sft("--load", "{T}/missing", option="--load", fix="expected a directory, found nothing"),
    sft("--load", "{T}/a-file", option="--load", fix="expected a directory, found a file"),
    sft("--tokenizer", "{T}/a-file", option="--tokenizer", fix="pass the HF model directory"),
    sft("--tokenizer", "{T}/missing", option="--tokenizer", fix="expected a directory, found nothing"),
    sft("--config", "{T}/missing.yaml", option="--config", fix="expected a file, found nothing"),
    sft("--config", "{T}/a-dir", option="--config", fix="expected a file, found a directory"),
    sft("--config", "{T}/twice.yaml", option="--config", fix="is given twice (lines 1 and 2); keep one"),
    sft("--config", "{T}/spelled.yaml", option="--config", fix="are the same option; keep one"),
    sft("--config", "{T}/list.yaml", option="--config", fix="must be a mapping of option: value"),
    sft("--model", "qwen4", option="--model qwen4", fix="choose one of"),
    sft("--model", "{T}/none.yaml", option="--model", fix="expected a preset YAML file, found nothing"),
    sft("--mbs", "0", option="--mbs", fix="must be at least 1"),
    sft("--env", "1X=2", option="--env", fix="NAME=VALUE"),
    sft("--nnodes", "2", "--node-rank", "2", "--master-addr", "10.0.0.1", option="--node-rank", fix="run 0..1"),
    sft("--", "--tensor-model-parallel-size", "2", option="--tensor-model-parallel-size", fix="pass --tp instead"),
    sft("--", "positional", option="positional", fix="everything after -- must be MindSpeed-LLM options"),
    Case((*SFT[:-1], "--no-preflight"), "--no-preflight", "only goes with --dry-run"),
    Case(("--bogus",), "--bogus", "the first word must be a stage"),
    prep("alpaca", "{T}/data.xml", fix="unsupported file type"),
    prep("alpaca", "{T}/empty.jsonl", fix="is empty"),
    prep("alpaca", "{T}/blank.jsonl", fix="is empty"),
    prep("alpaca", "{T}/a-dir", fix="holds no data file"),
    prep("alpaca", "{T}/mixed", fix="keep one format per folder"),
    prep("alpaca", "{T}/missing.jsonl", fix="found nothing"),
    prep("openai", ALPACA, fix="it looks like --format alpaca"),
    prep("pretrain", ALPACA, fix="it looks like --format alpaca"),
    prep("pretrain", "{T}/other.jsonl", fix="pass --json-keys"),
    prep("alpaca", ALPACA, MAP, "[1]", option=MAP, fix="must be a JSON object"),
    prep("alpaca", ALPACA, MAP, "{prompt", option=MAP, fix="not valid JSON"),
    prep("alpaca", ALPACA, MAP, '{"question": "q"}', option=MAP, fix="use prompt, query, response"),
    prep("alpaca", ALPACA, MAP, '{"prompt": "question"}', option=MAP, fix="the first record of"),
    prep("sharegpt", ALPACA, MAP, '{"tags": "x"}', option=MAP, fix="'tags' must be an object"),
    prep("pretrain", ALPACA, MAP, '{"prompt": "x"}', option=MAP, fix="pretraining data has no chat template"),
    Case((*ACC, "--data", "{T}/acc.jsonl", "--output", "{T}/a-dir"), "--output", "expected a file, found a directory"),
    Case((*ACC, "--data", "{T}/a-dir"), "--data", "expected a file, found a directory"),
    Case((*ACC, "--data", "{T}/acc.jsonl", "--load", "{T}/a-file", "--tokenizer", "{W}/Qwen3-14B"), "--load",
         "expected a directory, found a file"),
    Case((*ACC, "--data", "{T}/acc.jsonl", "--tp", "2"), "--tp", "does not take"),
    Case(("evaluate", "--task", "mmlu", "--model", "qwen3-14b", "--load", "{W}/mcore_tp2pp1", "--tokenizer",
          "{W}/Qwen3-14B", "--data", "{T}/missing", "--dry-run"), "--data", "found nothing"),
    Case((*GEN, "--prompt", "quit"), "--prompt", "give one non-empty line"),
    Case((*GEN, "--prompt", "two\nlines"), "--prompt", "give one non-empty line"),
    Case((*GEN, "--seq-length", "65536"), "--seq-length 65536", "max-position-embeddings 40960"),
    Case(("tensorboard", "--logdir", "{T}/a-file", "--dry-run"), "--logdir", "expected a directory"),
    Case(("convert", "hf2mcore", "--model", "qwen3-14b", "--load", "{T}/a-file", "--save", "{T}/c", "--tokenizer",
          "{W}/Qwen3-14B", "--dry-run"), "--load", "expected a directory, found a file"),
]

INVOKE_CASES = [
    render("--out", "{T}/a-file", option="--out", fix="found a file"),
    render("--out", "{T}/a-file/sub", option="--out", fix="is a file, so nothing can be created"),
    render("--out", "{T}/mixed", option="--out", fix="choose a new or empty directory"),
    render("--matrix", "{T}/a-dir", option="--matrix", fix="expected a file, found a directory"),
    render("--matrix", "{T}/missing.yaml", option="--matrix", fix="found nothing"),
    render("--matrix", "{T}/twice.yaml", option="--matrix", fix="is given twice"),
    render("--torch", "3", option="--torch", fix="choose one of 2.1.0, 2.6.0"),
    render("--arch", "sparc", option="--arch", fix="choose one of"),
    render("--os", "windows", option="--os", fix="choose one of"),
    render("--chip", "310p", option="--chip", fix="choose one of"),
    Case(("render", "--cann", "9.9.9"), "--cann", "8.1.RC1"),
    Case(("render", "--cann", "8"), "--cann", "ambiguous"),
    Case(("matrix", "--matrix", "{T}/a-dir"), "--matrix", "expected a file, found a directory"),
    build("--packages", "{T}/a-file", option="--packages", fix="found a file"),
    build("--lock-dir", "{T}/a-file", option="--lock-dir", fix="found a file"),
    build("--wheelhouse", "{T}/missing", option="--wheelhouse", fix="found nothing"),
    build("--sources", "{T}/a-file", option="--sources", fix="found a file"),
    build("--ca-cert", "{T}/missing.pem", option="--ca-cert", fix="found nothing"),
    build("--ca-cert", "{T}/a-dir", option="--ca-cert", fix="found a directory"),
    build("--ca-cert", "{T}/a-file", option="--ca-cert", fix="pass a PEM file"),
    build("--layers", "base,foo", option="--layers", fix="choose from base"),
    build("--until", "top", option="--until", fix="choose one of base"),
    Case(("fetch", "--cann", "8.1.RC1", "--ca-cert", "{T}/missing.pem"), "--ca-cert", "found nothing"),
    Case(("fetch", "--cann", "8.1.RC1", "--packages", "{T}/a-file/p"), "--packages", "is a file, so nothing"),
    Case(("verify", "--image", "x", "--lock-dir", "{T}/a-file"), "--lock-dir", "expected a directory, found a file"),
    Case(("verify",), "--image", "name the image"),
    Case(("verify", "--image", "x", "--cann", "8.1.RC1"), "--image", "not both"),
    Case(("k8s", "--image", IMAGE, "--nodes", "two", "--kind", "volcano", "--", "check"), "--nodes", "whole number"),
    k8s("--npus-per-node", "x", option="--npus-per-node", fix="whole number"),
    Case(("k8s", "--image", IMAGE, "--nodes", "2", "--kind", "slurm", "--", "check"), "--kind", "choose volcano"),
    k8s(stage=("sfd",), option="sfd", fix="did you mean sft?"),
    k8s(stage=("sft", "--nnodes", "2"), option="--nnodes", fix="drop --nnodes from the stage arguments"),
    Case(("k8s", "--image", "Not An Image", "--nodes", "2", "--kind", "volcano", "--", "check"), "--image",
         "not an image reference"),
    k8s("--out", "{T}/a-file/j.yaml", option="--out", fix="is a file, so nothing"),
    k8s("--out", "{T}/a-dir", option="--out", fix="expected a file (or nothing yet), found a directory"),
    k8s("--env", "X", option="--env", fix="NAME=VALUE"),
    k8s("--volume", "data", option="--volume", fix="absolute paths"),
    run(image="a b", option="--image", fix="not an image reference"),
    run("--npus", "9", option="--npus", fix="do not exist"),
    run("--mount", "a:b:c:d", option="--mount", fix="expected DIR"),
    run("--env", "X", option="--env", fix="NAME=VALUE"),
    run("--host-type", "a5", option="--host-type", fix="choose a2"),
    run("--shm-size", "huge", option="--shm-size", fix="such as 64g"),
    Case(("manifest", "--image", "x", "--out", "{T}/a-file"), "--out", "found a file"),
]
# fmt: on


def scratch(root: Path) -> None:
    """The files the cases point at: a file, a folder, data files of every wrong kind, broken configs."""
    root.mkdir()
    (root / "a-file").write_text("not a directory, not a PEM bundle\n")
    (root / "a-dir").mkdir()
    (root / "mixed").mkdir()
    (root / "mixed" / "a.jsonl").write_text('{"instruction": "q", "output": "a"}\n')
    (root / "mixed" / "b.csv").write_text("instruction,output\nq,a\n")
    (root / "data.xml").write_text("<data/>\n")
    (root / "empty.jsonl").write_text("")
    (root / "blank.jsonl").write_text("\n  \n")
    (root / "alpaca.jsonl").write_text('{"instruction": "q", "input": "", "output": "a"}\n')
    (root / "other.jsonl").write_text('{"body": "some text"}\n')
    (root / "twice.yaml").write_text("seq_length: 4096\nseq_length: 8192\n")
    (root / "spelled.yaml").write_text("seq_length: 4096\nseq-length: 8192\n")
    (root / "list.yaml").write_text("- seq_length\n")
    acc = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    (root / "acc.jsonl").write_text(json.dumps(acc) + "\n")


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bad-input")
    world = World(base / "world")
    for tp, pp in ((8, 1), (4, 1), (2, 1)):
        world.checkpoint(tp, pp)
    scratch(base / "scratch")
    return {"W": base / "world", "T": base / "scratch", "base": base}


def fill(argv: tuple[str, ...], places: dict[str, Path]) -> list[str]:
    return [a.replace("{W}", str(places["W"])).replace("{T}", str(places["T"])) for a in argv]


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``roots`` with its size and modification time: a write or a deletion changes it."""
    seen: dict[str, tuple[int, int]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                stat = os.lstat(path)
                seen[path] = (stat.st_size if name in filenames else -1, stat.st_mtime_ns)
    return seen


def the_line(code: int, out: str, err: str, case: Case) -> str:
    assert code == 2, (code, out, err)  # >= 1 is the rule; 2 is what both command lines use for a refusal
    assert "Traceback" not in out + err, err
    assert out == "", out
    lines = err.splitlines()
    assert len(lines) == 1, lines
    assert case.option in lines[0] and case.fix in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch, places: dict[str, Path]) -> Iterator[None]:
    """ascend-llm's view: no NPUs, no stack.json, a MindSpeed-LLM home, no launcher variables, roomy disks."""
    import shutil

    root = places["base"] / "sysroot"
    root.mkdir(exist_ok=True)
    home = places["base"] / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("ASCEND_LLM_SYSROOT", str(root))
    monkeypatch.setenv("MINDSPEED_LLM_HOME", str(home))
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    usage = shutil.disk_usage("/")
    monkeypatch.setattr("ascend_llm.preflight.shutil.disk_usage", lambda path: usage._replace(free=100 * 1024**4))
    yield


@pytest.mark.parametrize("case", ASCEND_CASES, ids=lambda c: f"{c.argv[0]} {c.option}")
def test_ascend_llm_refuses_in_one_line_and_writes_nothing(case: Case, places, machine, capsys) -> None:
    before = snapshot(places["base"])
    result = run_cli(capsys, *fill(case.argv, places))
    the_line(result.code, result.out, result.err, case)
    assert result.err.startswith("ascend-llm: ")
    assert snapshot(places["base"]) == before


@pytest.mark.parametrize("case", INVOKE_CASES, ids=lambda c: f"{c.argv[0]} {c.option}")
def test_invoke_refuses_in_one_line_and_writes_nothing(case: Case, places) -> None:
    watched = [places["base"], *(p for p in (REPO / "build", REPO / "locks") if p.is_dir())]
    before = snapshot(*watched)
    done = subprocess.run(
        [sys.executable, "-m", "invoke", *fill(case.argv, places)], cwd=REPO, capture_output=True, text=True
    )
    line = the_line(done.returncode, done.stdout, done.stderr, case)
    assert line.startswith("error: ")
    assert snapshot(*watched) == before


def test_the_table_is_big_enough() -> None:
    assert len(ASCEND_CASES) + len(INVOKE_CASES) >= 60

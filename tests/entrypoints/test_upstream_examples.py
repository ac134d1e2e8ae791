"""Every stage's command line against MindSpeed-LLM's own Qwen3 example scripts: for every preset and
every release ascend-llm has a table for, the entry script, each flag and its value, the exports and
the number of processes.

upstream_qwen3.yaml holds the scripts as data, read from each release's tag. DELIBERATE lists every
place where ascend-llm differs on purpose, with the reason (docs/stages.md repeats them); any other
difference fails, and so does a listed difference that no longer occurs anywhere.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from ascend_llm import cli
from ascend_llm.presets import load_preset
from ascend_llm.release import known_releases, load_release
from stagekit import (
    LAUNCHER_VARS,
    make_checkpoint,
    make_hf_dir,
    make_packed_data,
    make_pretrain_data,
    parse_command,
    parse_entry,
    parse_launcher,
)

DATA = yaml.safe_load((Path(__file__).parent / "upstream_qwen3.yaml").read_text(encoding="utf-8"))
RELEASES = list(DATA["releases"])
SIZES = {
    "qwen3-0.6b": "0point6b",
    "qwen3-1.7b": "1point7b",
    "qwen3-4b": "4b",
    "qwen3-8b": "8b",
    "qwen3-14b": "14b",
    "qwen3-32b": "32b",
}
SCRIPTS = {
    "convert hf2mcore": "ckpt_convert_qwen3_hf2mcore.sh",
    "convert mcore2hf": "ckpt_convert_qwen3_mcore2hf.sh",
    "convert lora-merge": "ckpt_convert_qwen3_mcore2hf_lora.sh",
    "preprocess pretrain": "data_convert_qwen3_pretrain.sh",
    "preprocess alpaca": "data_convert_qwen3_instruction.sh",
    "pretrain": "pretrain_qwen3_{size}_4K_ptd.sh",
    "sft": "tune_qwen3_{size}_4K_full_ptd.sh",
    "lora": "tune_qwen3_{size}_4K_lora_ptd.sh",
    "generate": "generate_qwen3_{size}_ptd.sh",
    "evaluate": "evaluate_qwen3_{size}_ptd.sh",
}
CASES = [*SCRIPTS, *DATA["derived"]]
# preprocess does not depend on the model: its cases run once per release, with this preset
PREPROCESS_PRESET = "qwen3-14b"
TRAINING = ("pretrain", "sft", "lora")
# The target split of these conversions is the user's choice (--tp/--pp), not a value to compare.
TARGET_SPLIT = ("convert hf2mcore", "convert mcore2mcore", "convert lora-merge --to mcore")


# -- the reference ---------------------------------------------------------------------------------
def _values(value: Any) -> list[str]:
    return [] if value is True else [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _change(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in change.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def script(release: str, name: str) -> dict[str, Any]:
    """A script of ``release`` with what the releases before it said applied."""
    entry = DATA["releases"][release]
    base = script(entry["follows"], name) if "follows" in entry else {"flags": {}, "env": {}}
    mine = entry["scripts"].get(name) or {}
    return {
        **base,
        **{k: v for k, v in mine.items() if k not in ("flags", "env")},
        "flags": _change(base["flags"], mine.get("flags") or {}),
        "env": _change(base["env"], mine.get("env") or {}),
    }


def reference(release: str, case: str, preset: str) -> dict[str, Any]:
    """The upstream command line ``case`` is compared with, flags as {flag: [values]}."""
    if case in SCRIPTS:
        ref = script(release, SCRIPTS[case].format(size=SIZES[preset]))
    else:
        derived = DATA["derived"][case]
        source = derived.get("release", release)
        if RELEASES.index(source) > RELEASES.index(release):
            source = release
        ref = script(source, derived["from"])
        ref = {**ref, "flags": _change(ref["flags"], derived["flags"])}
    return {**ref, "flags": {flag: _values(value) for flag, value in ref["flags"].items()}}


# -- what ascend-llm does differently on purpose ---------------------------------------------------
@dataclass(frozen=True)
class Deliberate:
    """One deliberate difference: ``kind`` added/removed/changed (a flag) or nproc (torchrun)."""

    kind: str
    flag: str
    reason: str
    cases: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()
    releases: tuple[str, ...] = ()

    def covers(self, kind: str, flag: str, release: str, preset: str, case: str) -> bool:
        return (
            (kind, flag) == (self.kind, self.flag)
            and (not self.cases or case in self.cases)
            and (not self.presets or preset in self.presets)
            and (not self.releases or release in self.releases)
        )


MODEL_FLAGS_SAME = "the model flags are the same in every stage, as the checkpoint was converted with them"
ONLINE_CONVERSION = (
    "26.1.0's 8B example converts the HF weights and tokenises the data inside training; ascend-llm "
    "does both in their own stages (convert hf2mcore, preprocess), which preflight can check"
)
DELIBERATE = (
    Deliberate(
        "added", "--exit-signal-handler", "docker stop / SIGTERM makes Megatron save a checkpoint first", TRAINING
    ),
    Deliberate(
        "added", "--tensorboard-dir", "loss curves for `ascend-llm tensorboard` (the seed adds it by hand)", TRAINING
    ),
    Deliberate(
        "added",
        "--exit-on-missing-checkpoint",
        "a wrong --load must stop the run instead of training from random weights",
        TRAINING,
    ),
    Deliberate("added", "--norm-epsilon", "the model's rms_norm_eps 1e-6; without it Megatron uses 1e-5"),
    Deliberate(
        "changed",
        "--max-position-embeddings",
        "the model's 40960 in every stage (upstream passes 4096 or 32768 in places); RoPE only needs >= --seq-length",
    ),
    Deliberate(
        "added",
        "--kv-channels",
        f"128 = hidden / heads, Megatron's default anyway; {MODEL_FLAGS_SAME}",
        presets=("qwen3-8b",),
    ),
    Deliberate(
        "added",
        "--bf16",
        f"{MODEL_FLAGS_SAME}; upstream's 4B/8B generate scripts omit it and so generate in fp32",
        ("generate",),
        ("qwen3-4b", "qwen3-8b"),
    ),
    Deliberate("added", "--use-rotary-position-embeddings", MODEL_FLAGS_SAME, ("generate",), ("qwen3-4b", "qwen3-8b")),
    Deliberate("added", "--no-masked-softmax-fusion", MODEL_FLAGS_SAME, ("generate",), ("qwen3-4b", "qwen3-8b")),
    Deliberate(
        "added",
        "--no-masked-softmax-fusion",
        f"{MODEL_FLAGS_SAME} (2.2.0's 14B pretrain script drops it; a no-op next to --use-flash-attn)",
        ("pretrain",),
        ("qwen3-14b",),
        ("2.2.0", "2.3.0", "26.0.0", "26.1.0"),
    ),
    Deliberate(
        "added",
        "--task",
        "non-interactive by default: upstream's default ends in an interactive chat that hangs a batch job",
        ("generate",),
    ),
    Deliberate(
        "nproc",
        "--nproc_per_node",
        "as many processes as TP x PP: upstream starts 8 copies of a TP1 model that all print the same answer",
        ("generate",),
    ),
    Deliberate(
        "changed",
        "--eval-interval",
        "no effect next to --eval-iters 0 (no evaluation during training); ascend-llm passes --train-iters",
        TRAINING,
    ),
    Deliberate(
        "added",
        "--params-dtype",
        "bf16 like every other conversion (upstream's merge example omits it and so writes fp16)",
        ("convert lora-merge", "convert lora-merge --to mcore"),
    ),
    Deliberate(
        "changed",
        "--lora-r",
        "the value the LoRA run was trained with (upstream's LoRA scripts train with 16, its merge example says 8)",
        ("convert lora-merge", "convert lora-merge --to mcore"),
    ),
    Deliberate(
        "changed",
        "--lora-alpha",
        "likewise the trained value (32 in upstream's LoRA scripts, 16 in its merge example)",
        ("convert lora-merge", "convert lora-merge --to mcore"),
    ),
    Deliberate(
        "changed",
        "--save-dir",
        "<hf-dir>/mg2hf as on every other release: upstream's example writes the merged weights over the original ones",
        ("convert lora-merge",),
        releases=("26.1.0",),
    ),
    *(
        Deliberate("removed", flag, ONLINE_CONVERSION, ("pretrain", "sft"), ("qwen3-8b",), ("26.1.0",))
        for flag in ("--enable-hf2mg-convert", "--model-type-hf", "--handler-name", "--workers", "--enable-thinking")
    ),
)


# -- running ascend-llm as a user would ------------------------------------------------------------
@dataclass
class Run:
    entry: str
    flags: dict[str, list[str]]
    launcher: dict[str, str]
    env: dict[str, str]


def exports(text: str) -> dict[str, str]:
    """NAME -> default value of the script's ``export NAME="${NAME:-value}"`` lines."""
    import re

    return dict(re.findall(r'^export (\w+)="\$\{\w+:-([^}]*)\}"', text, re.M))


def substitute(flags: dict[str, list[str]], mapping: dict[str, str]) -> dict[str, list[str]]:
    """Real paths -> the reference's placeholders (a path or a path below it)."""
    ordered = sorted(mapping.items(), key=lambda item: -len(item[0]))
    out = {}
    for flag, values in flags.items():
        new = []
        for value in values:
            for real, placeholder in ordered:
                if value == real or value.startswith(real + "/"):
                    value = placeholder + value[len(real) :]
                    break
            new.append(value)
        out[flag] = new
    return out


class World:
    """One preset on one release: its HF dir, a checkpoint in each stage's layout, data and raw inputs."""

    def __init__(self, root: Path, release: str, name: str) -> None:
        self.release, self.name, self.root = release, name, root
        self.preset = load_release(release).preset(load_preset(name))
        self.hf = make_hf_dir(root / "Qwen3-HF", {"model_type": "qwen3", **self.preset.hf_config})
        self.ckpt = {}
        for stage in ("pretrain", "sft", "lora", "generate", "evaluate"):
            defaults = self.preset.stage(stage)
            self.ckpt[stage] = make_checkpoint(root / f"mcore-{stage}", defaults.get("tp"), defaults.get("pp"))
        lora = self.preset.stage("lora")
        self.lora = make_checkpoint(root / "lora-run", lora.get("tp"), lora.get("pp"))
        (self.lora / "ascend_llm_lora.json").write_text(
            json.dumps({"lora_r": 16, "lora_alpha": 32, "lora_target_modules": ["linear_qkv", "linear_proj",
                        "linear_fc1", "linear_fc2"]})
        )  # fmt: skip
        self.pretrain_data = make_pretrain_data(root / "data" / "enwiki")
        self.sft_data = make_packed_data(root / "data" / "alpaca")
        self.raw = root / "raw"
        self.raw.mkdir()
        (self.raw / "pretrain.jsonl").write_text('{"text": "a b c"}\n')
        (self.raw / "alpaca.jsonl").write_text('{"instruction": "i", "input": "", "output": "o"}\n')
        (self.raw / "sharegpt.jsonl").write_text(
            '{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}\n'
        )
        (self.raw / "openai.jsonl").write_text(
            '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
        )
        self.mmlu = root / "mmlu" / "test"
        self.mmlu.mkdir(parents=True)
        (self.mmlu / "abstract_algebra_test.csv").write_text("q,a,b,c,d,A\n")

    def split(self, case: str) -> tuple[int, int]:
        """The --tp/--pp a conversion is asked for: upstream's TP1 PP8 where it divides the layers."""
        if case == "convert lora-merge --to mcore":
            return 1, 1
        if case == "convert mcore2mcore":
            return (
                (1, 2) if (self.preset.stage("sft").get("tp"), self.preset.stage("sft").get("pp")) == (1, 1) else (1, 1)
            )
        return (1, 8) if self.preset.num_layers % 8 == 0 else (1, 4)

    def argv(self, case: str) -> tuple[list[Any], dict[str, str]]:
        """The command line and the real path -> placeholder map of ``case``."""
        common = ["--model", self.name, "--dry-run", "--release", self.release]
        hf, out = str(self.hf), str(self.root / "out")
        parts = case.split()
        if parts[0] == "convert":
            tp, pp = self.split(case)
            sft, base, lora = str(self.ckpt["sft"]), str(self.ckpt["lora"]), str(self.lora)
            mg2hf = {hf + "/mg2hf": "<HF_OUT>", hf: "<HF>"}
            args, mapping = {
                "convert hf2mcore": (
                    ["--load", hf, "--save", out, "--tp", tp, "--pp", pp],
                    {hf: "<HF>", out: "<MCORE>"},
                ),
                "convert mcore2hf": (["--load", sft, "--hf-dir", hf], {sft: "<MCORE>", **mg2hf}),
                "convert mcore2mcore": (
                    ["--load", sft, "--save", out, "--tp", tp, "--pp", pp],
                    {sft: "<MCORE>", out: "<MCORE_OUT>"},
                ),
                "convert lora-merge": (
                    ["--load", base, "--lora-load", lora, "--to", "hf", "--hf-dir", hf],
                    {base: "<MCORE>", lora: "<LORA>", **mg2hf},
                ),
                "convert lora-merge --to mcore": (
                    ["--load", base, "--lora-load", lora, "--save", out, "--tp", tp, "--pp", pp],
                    {base: "<MCORE>", lora: "<LORA>", out: "<MCORE_OUT>"},
                ),
            }[case]
            return ["convert", parts[1], *common, *args], mapping
        if parts[0] == "preprocess":
            raw, prefix = str(self.raw / f"{parts[1]}.jsonl"), str(self.root / "prep" / parts[1])
            argv = ["preprocess", "--format", parts[1], "--input", raw, "--output-prefix", prefix, "--tokenizer", hf]
            return [*argv, *common], {raw: "<IN>", prefix: "<OUT>", hf: "<TOK>"}
        load = str(self.ckpt[case])
        argv = [case, *common, "--load", load, "--tokenizer", hf]
        mapping = {load: "<LOAD>", hf: "<TOK>"}
        if case in TRAINING:
            data = self.pretrain_data if case == "pretrain" else self.sft_data
            argv += ["--save", out, "--data", data, "--master-addr", "node0"]
            mapping.update({out: "<SAVE>", data: "<DATA>"})
        if case == "evaluate":
            argv += ["--task", "mmlu", "--data", self.mmlu]
            mapping[str(self.mmlu)] = "<DATA>"
        return argv, mapping

    def run(self, case: str) -> Run:
        argv, mapping = self.argv(case)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([str(a) for a in argv])
        assert code == 0, f"{self.release} {self.name} {case}: {err.getvalue()}"
        text = out.getvalue()
        return Run(parse_entry(text), substitute(parse_command(text), mapping), parse_launcher(text), exports(text))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], Run]:
    """Every case for every preset on every release, dry-run once on a clean fake machine."""
    results = {}
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("upstream")
        (root / "sysroot").mkdir()
        patch.setenv("ASCEND_LLM_SYSROOT", str(root / "sysroot"))
        patch.setenv("MINDSPEED_LLM_HOME", str(root / "mindspeed_llm"))
        for name in LAUNCHER_VARS:
            patch.delenv(name, raising=False)
        usage = shutil.disk_usage("/")
        patch.setattr("ascend_llm.preflight.shutil.disk_usage", lambda path: usage._replace(free=100 * 1024**4))
        for release in RELEASES:
            for name in SIZES:
                world = World(root / release / name, release, name)
                for case in cases(name):
                    results[(release, name, case)] = world.run(case)
    return results


def cases(name: str) -> list[str]:
    return [c for c in CASES if name == PREPROCESS_PRESET or not c.startswith("preprocess")]


def same_value(a: list[str], b: list[str]) -> bool:
    """Equal as text, as numbers (0 and 0.0, 1e-1 and 0.1) or as JSON (--map-keys)."""
    if a == b:
        return True
    if len(a) != len(b):
        return False
    try:
        return all(float(x) == float(y) for x, y in zip(a, b, strict=True))
    except ValueError:
        pass
    try:
        return [json.loads(x) for x in a] == [json.loads(y) for y in b]
    except ValueError:
        return False


def differences(release: str, name: str, case: str, run: Run) -> list[tuple[str, str, str]]:
    """(kind, flag, detail) for everything that differs from the upstream command line."""
    ref = reference(release, case, name)
    expected = dict(ref["flags"])
    if case in TARGET_SPLIT:
        for flag in ("--target-tensor-parallel-size", "--target-pipeline-parallel-size"):
            if flag in expected and flag in run.flags:
                expected[flag] = run.flags[flag]
    out = []
    for flag in run.flags.keys() - expected.keys():
        out.append(("added", flag, " ".join(run.flags[flag])))
    for flag in expected.keys() - run.flags.keys():
        out.append(("removed", flag, " ".join(expected[flag])))
    for flag in run.flags.keys() & expected.keys():
        if not same_value(run.flags[flag], expected[flag]):
            out.append(("changed", flag, f"ours {run.flags[flag]}, upstream {expected[flag]}"))
    if "launch" in ref:
        for key in ("nproc_per_node", "nnodes"):
            if run.launcher.get(f"--{key}") != str(ref["launch"][key]):
                out.append(("nproc" if key == "nproc_per_node" else "launch", f"--{key}", run.launcher.get(f"--{key}")))
    return sorted(out)


def unexplained(release: str, name: str, runs: dict) -> list[str]:
    problems = []
    for case in cases(name):
        for kind, flag, detail in differences(release, name, case, runs[(release, name, case)]):
            if not any(d.covers(kind, flag, release, name, case) for d in DELIBERATE):
                problems.append(f"{case}: {kind} {flag} ({detail})")
    return problems


@pytest.mark.parametrize("name", sorted(SIZES))
@pytest.mark.parametrize("release", RELEASES)
def test_command_lines_match_the_releases_examples(runs, release: str, name: str) -> None:
    """Flag for flag and value for value, except the listed deliberate differences."""
    assert unexplained(release, name, runs) == []


@pytest.mark.parametrize("release", RELEASES)
def test_entry_scripts_are_the_releases(runs, release: str) -> None:
    for name in SIZES:
        for case in cases(name):
            assert runs[(release, name, case)].entry == reference(release, case, name)["entry"], (name, case)


@pytest.mark.parametrize("release", RELEASES)
def test_exports_include_the_examples(runs, release: str) -> None:
    """What upstream's scripts export is exported, with the same value (ours may add more)."""
    for name in SIZES:
        for case in cases(name):
            env = runs[(release, name, case)].env
            for var, value in reference(release, case, name)["env"].items():
                assert env.get(var) == value, f"{name} {case}: {var} is {env.get(var)!r}, upstream {value!r}"


def test_every_deliberate_difference_occurs_and_is_explained(runs) -> None:
    """The list documents what happens; an entry that matches nothing is stale."""
    found = [
        (kind, flag, release, name, case)
        for (release, name, case), run in runs.items()
        for kind, flag, _ in differences(release, name, case, run)
    ]
    for rule in DELIBERATE:
        assert len(rule.reason) > 30, rule
        assert any(rule.covers(*item) for item in found), f"no longer differs: {rule}"


def test_every_release_table_has_its_examples() -> None:
    """A release ascend-llm supports is compared with that release's own scripts."""
    assert known_releases() == RELEASES
    for release in RELEASES:
        table = load_release(release)
        assert (table.tag, table.commit) == (DATA["releases"][release]["tag"], DATA["releases"][release]["commit"])

"""Every preflight rule with a failing and a passing case, on real directories and real .bin/.idx files."""

from __future__ import annotations

import json
import os
import shutil
import time
import types
from pathlib import Path

import pytest
from ascend_llm import checkpoint, datafiles, preflight
from ascend_llm.presets import load_preset
from stagekit import (
    make_checkpoint,
    make_devices,
    make_dist_checkpoint,
    make_hf_dir,
    make_mindspeed_home,
    make_packed_data,
    make_pretrain_data,
    write_indexed,
)


@pytest.fixture
def sft_args(world, roomy_disk):
    """A passing sft dry-run command line; tests change one thing."""

    def build(**change):
        args = {
            "--model": "qwen3-14b",
            "--load": world.checkpoint(8, 1),
            "--save": world.out / "sft",
            "--data": world.sft_data,
            "--tokenizer": world.hf,
        }
        args.update(change)
        argv = ["sft", "--dry-run"]
        for flag, value in args.items():
            if value is not None:
                argv += [flag, str(value)]
        return argv

    return build


def only_line(result, *needles: str) -> str:
    """The run failed with exit 2 and one line that names every needle; no traceback."""
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert "Traceback" not in result.err
    assert all(line.startswith("ascend-llm: ") for line in lines), lines
    match = [line for line in lines if all(n in line for n in needles)]
    assert match, f"no line with {needles}: {lines}"
    return match[0]


def test_passing_case_prints_the_script(ascend, sft_args) -> None:
    result = ascend(*sft_args())
    assert result.code == 0, result.err
    assert result.out.startswith("#!/usr/bin/env bash\n") and result.err == ""


# -- paths and tokenizer -------------------------------------------------------------------------
def test_load_must_exist(ascend, sft_args, world) -> None:
    only_line(ascend(*sft_args(**{"--load": world.root / "nope"})), "--load", "expected a directory, found nothing")


def test_tokenizer_dir_must_exist_and_hold_a_tokenizer(ascend, sft_args, world) -> None:
    only_line(
        ascend(*sft_args(**{"--tokenizer": world.root / "nope"})), "--tokenizer", "expected a directory, found nothing"
    )
    empty = world.root / "empty"
    empty.mkdir()
    only_line(ascend(*sft_args(**{"--tokenizer": empty})), "holds no tokenizer", "tokenizer.json")
    (empty / "tokenizer.json").write_text("{}")
    assert ascend(*sft_args(**{"--tokenizer": empty})).code == 0


def test_save_dir_must_be_writable(ascend, sft_args, world) -> None:
    line = only_line(ascend(*sft_args(**{"--save": "/proc/1/ascend-llm-out"})), "--save", "not writable")
    assert "/proc/1" in line and "docker run -v" in line
    only_line(
        ascend(*sft_args(**{"--save": world.sft_data + "_packed_labels_document.bin"})),
        "expected a directory, found a file",
    )
    assert ascend(*sft_args(**{"--save": world.root / "new" / "deeper"})).code == 0


def test_a_volume_the_user_cannot_write_names_the_uid_and_gid(ascend, sft_args, world, monkeypatch) -> None:
    """The image runs as HwHiAiUser: a root-owned volume must say which uid/gid to give it to.
    (The tests run as root, who may write anywhere, so os.access plays the non-root user here; the
    integration tests do it for real in the image.)"""
    out = world.out / "owned-by-root"
    out.mkdir(parents=True)
    real = os.access
    monkeypatch.setattr("ascend_llm.preflight.os.access", lambda p, mode: False if Path(p) == out else real(p, mode))
    line = only_line(ascend(*sft_args(**{"--save": out / "sft"})), "--save", "not writable")
    uid, gid = os.getuid(), os.getgid()
    assert f"{out} is not writable by this container's user (uid {uid}, gid {gid}; it is owned by " in line
    assert f"sudo chown -R {uid}:{gid} HOST_DIR" in line and "--user root" in line


def test_save_dir_needs_room_for_the_checkpoint(ascend, world, tmp_path: Path) -> None:
    """No fake disk here: a preset whose checkpoint cannot fit, and one that surely does."""
    text = Path(load_preset("qwen3-14b").path).read_text()
    free_gb = shutil.disk_usage(tmp_path).free / 1e9
    huge = tmp_path / "huge.yaml"
    huge.write_text(text.replace("params_billion: 14.8", f"params_billion: {free_gb:.0f}"))
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(text.replace("params_billion: 14.8", "params_billion: 0.000001"))
    argv = [
        "sft",
        "--dry-run",
        "--load",
        world.checkpoint(8, 1),
        "--save",
        world.out / "sft",
        "--data",
        world.sft_data,
        "--tokenizer",
        world.hf,
    ]
    line = only_line(ascend(*argv, "--model", huge), "--save", "GB", "free")
    assert "needs about" in line
    assert ascend(*argv, "--model", tiny).code == 0


def test_checkpoint_size_estimate_counts_every_save(tmp_path: Path) -> None:
    preset = load_preset("qwen3-14b")
    one = preflight.checkpoint_bytes(preset, "training", 1)
    assert one == int(14.8e9 * 14)
    assert preflight.checkpoint_bytes(preset, "training", preflight.saves_count(2000, 500)) == 4 * one
    assert preflight.checkpoint_bytes(preset, "weights") == int(14.8e9 * 2)


# -- data suffix rules -----------------------------------------------------------------------------
def test_pretrain_data_wants_the_text_document_suffix(tmp_path: Path) -> None:
    prefix = tmp_path / "enwiki"
    data = make_pretrain_data(prefix)
    assert datafiles.check_pretrain_data(data) == []
    (problem,) = datafiles.check_pretrain_data(str(prefix))
    assert f"pass --data {prefix}_text_document" in problem
    (problem,) = datafiles.check_pretrain_data(data + ".bin")
    assert f"--data {data}" in problem and "without the extension" in problem
    (problem,) = datafiles.check_pretrain_data(str(tmp_path / "other"))
    assert "ascend-llm preprocess --format pretrain" in problem


def test_pretrain_refuses_instruction_data(tmp_path: Path) -> None:
    prefix = make_packed_data(tmp_path / "alpaca")
    for given in (prefix, prefix + "_packed_input_ids_document"):
        (problem,) = datafiles.check_pretrain_data(given)
        assert "instruction data" in problem and "--format pretrain" in problem


def test_sft_data_wants_the_bare_prefix(tmp_path: Path) -> None:
    prefix = make_packed_data(tmp_path / "ft" / "alpaca")
    assert datafiles.check_packed_data(prefix, "sft") == []
    for suffixed in (f"{prefix}_packed_input_ids_document", f"{prefix}_packed_labels_document.idx"):
        (problem,) = datafiles.check_packed_data(suffixed, "sft")
        assert problem.endswith(f"pass --data {prefix}"), problem
    (problem,) = datafiles.check_packed_data(str(tmp_path / "ft"), "sft")
    assert f"pass the prefix --data {prefix}" in problem


def test_sft_refuses_pretraining_data(tmp_path: Path) -> None:
    data = make_pretrain_data(tmp_path / "enwiki")
    for given in (data, str(tmp_path / "enwiki")):
        (problem,) = datafiles.check_packed_data(given, "lora")
        assert "pretraining data" in problem and "alpaca|sharegpt|openai" in problem


def test_sft_data_must_be_complete_and_consistent(tmp_path: Path) -> None:
    prefix = make_packed_data(tmp_path / "a")
    os.remove(f"{prefix}_packed_labels_document.bin")
    os.remove(f"{prefix}_packed_labels_document.idx")
    (problem,) = datafiles.check_packed_data(prefix, "sft")
    assert "labels_document missing" in problem
    prefix = make_packed_data(tmp_path / "b", counts={"labels": 2})
    (problem,) = datafiles.check_packed_data(prefix, "sft")
    assert "disagree" in problem and "labels 2" in problem
    (problem,) = datafiles.check_packed_data(str(tmp_path / "none"), "sft")
    assert "ascend-llm preprocess --format alpaca|sharegpt|openai" in problem


def test_index_files_are_checked_against_their_bin(tmp_path: Path) -> None:
    prefix = str(tmp_path / "d_text_document")
    write_indexed(prefix, [[1, 2, 3], [4, 5]])
    info, problem = datafiles.read_index(prefix)
    assert problem is None and info is not None and (info.sequences, info.documents) == (2, 3)
    with open(prefix + ".bin", "ab") as handle:
        handle.write(b"\0\0\0\0")
    _, problem = datafiles.read_index(prefix)
    assert "does not belong together" in problem
    data = Path(prefix + ".idx").read_bytes()
    Path(prefix + ".idx").write_bytes(data[:40])
    _, problem = datafiles.read_index(prefix)
    assert "truncated" in problem
    Path(prefix + ".idx").write_bytes(b"not an index at all, really not")
    _, problem = datafiles.read_index(prefix)
    assert "bad header" in problem
    os.remove(prefix + ".bin")
    write_indexed(str(tmp_path / "e"), [[1]])
    os.remove(str(tmp_path / "e.bin"))
    _, problem = datafiles.read_index(str(tmp_path / "e"))
    assert "e.bin is missing" in problem


def test_data_rules_reach_the_user(ascend, sft_args, world) -> None:
    only_line(
        ascend(*sft_args(**{"--data": world.sft_data + "_packed_input_ids_document"})), f"pass --data {world.sft_data}"
    )
    only_line(ascend(*sft_args(**{"--data": world.pretrain_data})), "pretraining data")


# -- checkpoint layout ---------------------------------------------------------------------------
def test_checkpoint_layout_must_match_tp_pp(ascend, sft_args, world) -> None:
    ckpt = world.checkpoint(1, 8)
    line = only_line(ascend(*sft_args(**{"--load": ckpt})), "split TP1 PP8", "TP8 PP1")
    assert f"ascend-llm convert mcore2mcore --model qwen3-14b --load {ckpt} --save {ckpt}-tp8pp1 --tp 8 --pp 1" in line
    assert ascend(*sft_args(**{"--load": ckpt, "--tp": 1, "--pp": 8})).code == 0


def test_checkpoint_layout_reads_the_latest_iteration(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "c", 2, 4, iteration=100)
    make_checkpoint(tmp_path / "c", 8, 1, iteration=50)  # an older iteration with another split
    (tmp_path / "c" / "latest_checkpointed_iteration.txt").write_text("100\n")
    assert preflight.checkpoint_layout(str(ckpt), 2, 4, None) == []
    (problem,) = preflight.checkpoint_layout(str(ckpt), 8, 1, None)
    assert "split TP2 PP4" in problem
    release = tmp_path / "r"
    (release / "release" / "mp_rank_00").mkdir(parents=True)
    (release / "release" / "mp_rank_00" / "model_optim_rng.pt").write_bytes(b"")
    (release / "latest_checkpointed_iteration.txt").write_text("release")
    assert preflight.checkpoint_layout(str(release), 1, 1, None) == []


def test_checkpoint_must_be_a_complete_megatron_checkpoint(tmp_path: Path, world) -> None:
    preset = load_preset("qwen3-14b")
    (problem,) = preflight.checkpoint_layout(str(world.hf), 8, 1, preset)
    assert "HuggingFace model" in problem and f"convert hf2mcore --model qwen3-14b --load {world.hf}" in problem
    empty = tmp_path / "empty"
    empty.mkdir()
    (problem,) = preflight.checkpoint_layout(str(empty), 8, 1, preset)
    assert "latest_checkpointed_iteration.txt" in problem
    broken = make_checkpoint(tmp_path / "broken", 2, 2, skip=("mp_rank_01_001",))
    (problem,) = preflight.checkpoint_layout(str(broken), 2, 2, preset)
    assert "mp_rank_01_001" in problem and "incomplete" in problem
    gone = make_checkpoint(tmp_path / "gone", 1, 1)
    (gone / "latest_checkpointed_iteration.txt").write_text("7")
    (problem,) = preflight.checkpoint_layout(str(gone), 1, 1, preset)
    assert "iter_0000007/ is missing" in problem


@pytest.mark.parametrize("release", ["2.1.0", "2.2.0", "2.3.0", "26.0.0", "26.1.0"])
def test_torch_dist_checkpoints_are_refused_naming_the_flag(ascend, sft_args, world, release: str) -> None:
    """Every release's converters, and training up to 26.0.0 (which forces the torch format), read only
    iter_*/mp_rank_* checkpoints; a torch_dist one gets one line naming --ckpt-format torch."""
    dist = make_dist_checkpoint(world.root / "dist")
    line = only_line(ascend(*sft_args(**{"--load": dist}), "--release", release), "torch_dist checkpoint")
    assert "--ckpt-format torch" in line
    convert = ["convert", "mcore2hf", "--model", "qwen3-14b", "--load", dist, "--hf-dir", world.hf, "--dry-run"]
    line = only_line(ascend(*convert, "--release", release), "torch_dist checkpoint")
    assert "--ckpt-format torch" in line and "convert" in line


def test_26_1_0_loads_torch_dist_when_the_command_says_so(ascend, sft_args, world) -> None:
    """26.1.0 no longer forces the format; its scripts pass --ckpt-format torch, which cannot load torch_dist."""
    dist = make_dist_checkpoint(world.root / "dist")
    argv = [*sft_args(**{"--load": dist}), "--release", "26.1.0"]
    line = only_line(ascend(*argv), "torch_dist checkpoint")
    assert "-- --ckpt-format torch_dist" in line
    for extra in (["--ckpt-format", "torch_dist"], ["--auto-detect-ckpt-format"]):
        result = ascend(*argv, "--", *extra)
        assert result.code == 0, result.err
    assert ascend(*sft_args(**{"--load": dist}), "--release", "26.0.0", "--", "--ckpt-format", "torch_dist").code == 2


def test_read_layout_tells_the_formats_apart(tmp_path: Path) -> None:
    assert checkpoint.read_layout(make_dist_checkpoint(tmp_path / "d")).format == "torch_dist"
    layout = checkpoint.read_layout(make_checkpoint(tmp_path / "t", 2, 4))
    assert (layout.format, layout.tp, layout.pp) == ("torch", 2, 4)


# -- divisibility --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"--nproc-per-node": "6"}, "world size 6"),
        ({"--tp": "4", "--pp": "3"}, "40 layers, not divisible by --pp 3"),
        ({"--tp": "3", "--pp": "1", "--nproc-per-node": "3"}, "40 attention heads"),
        ({"--tp": "16", "--pp": "1", "--nproc-per-node": "16"}, "8 query groups"),
        ({"--tp": "1", "--pp": "1", "--gbs": "12"}, "--gbs 12 is not divisible by --mbs 1 x data-parallel size 8"),
        ({"--tp": "2", "--pp": "1", "--gbs": "10"}, "data-parallel size 4"),
        ({"--seq-length": "4090"}, "--seq-length 4090 must be divisible by --tp 8 with --sequence-parallel"),
        ({"--tp": "2", "--pp": "2", "--cp": "2", "--seq-length": "4094"}, "2 x --cp 2"),
        ({"--tp": "1", "--pp": "4", "--vpp": "3"}, "--vpp 3 must divide the 10 layers"),
    ],
)
def test_divisibility(ascend, sft_args, world, change, needle) -> None:
    if "--tp" in change:  # a checkpoint in the asked layout, so only the rule under test can fail
        change["--load"] = world.checkpoint(int(change["--tp"]), int(change["--pp"]))
    only_line(ascend(*sft_args(**change)), needle)


def test_divisibility_passes_for_good_layouts(ascend, sft_args, world) -> None:
    for tp, pp, nproc in ((8, 1, 8), (4, 2, 8), (2, 4, 16), (1, 8, 8)):
        result = ascend(
            *sft_args(**{"--tp": tp, "--pp": pp, "--nproc-per-node": nproc, "--load": world.checkpoint(tp, pp)})
        )
        assert result.code == 0, (tp, pp, result.err)


# -- devices, entry script (real runs only) --------------------------------------------------------
def test_real_run_needs_npus_and_the_entry_script(ascend, sft_args, sysroot, monkeypatch) -> None:
    argv = [a for a in sft_args() if a != "--dry-run"]
    only_line(ascend(*argv), "no NPU visible")
    make_devices(sysroot, 4)
    only_line(ascend(*argv), "--nproc-per-node 8 but only 4 NPU(s)")
    only_line(ascend(*argv), "posttrain_gpt.py not found")
    monkeypatch.setenv("ASCEND_RT_VISIBLE_DEVICES", "0-1")
    make_devices(sysroot, 8)
    only_line(ascend(*argv), "only 2 NPU(s)")
    monkeypatch.delenv("ASCEND_RT_VISIBLE_DEVICES")
    make_mindspeed_home()
    result = ascend(*argv, "--nproc-per-node", "8")
    assert "NPU" not in result.err and "not found" not in result.err


# -- transformers and HF configs -------------------------------------------------------------------
def test_transformers_must_know_the_model_type(tmp_path: Path, monkeypatch) -> None:
    assert preflight.transformers_knows("qwen3", "sft") == []  # the real install (4.51.0)
    fake = tmp_path / "transformers"
    (fake / "models" / "llama").mkdir(parents=True)
    spec = types.SimpleNamespace(submodule_search_locations=[str(fake)])
    monkeypatch.setattr(preflight.importlib.util, "find_spec", lambda name: spec)
    monkeypatch.setattr("importlib.metadata.version", lambda name: "4.43.2")
    (problem,) = preflight.transformers_knows("qwen3", "sft")
    assert "transformers 4.43.2 does not know model type 'qwen3'" in problem and "4.51.0" in problem
    (fake / "models" / "qwen3").mkdir()
    assert preflight.transformers_knows("qwen3", "sft") == []
    monkeypatch.setattr("importlib.metadata.version", lambda name: "4.52.0.dev0")
    (problem,) = preflight.transformers_knows("qwen3", "convert")
    assert "4.52.0.dev0" in problem and "convert_ckpt.py" in problem


def test_missing_transformers_is_a_note_not_a_failure(monkeypatch) -> None:
    monkeypatch.setattr(preflight.importlib.util, "find_spec", lambda name: None)
    assert preflight.transformers_knows("qwen3", "sft") == []
    assert "skipped" in preflight.transformers_missing_note()


def test_hf_weights_must_be_the_presets_model(ascend, world, tmp_path: Path, roomy_disk) -> None:
    argv = ["convert", "hf2mcore", "--load", world.hf, "--save", tmp_path / "o", "--dry-run"]
    only_line(ascend(*argv, "--model", "qwen3-8b"), "does not describe qwen3-8b", "num_hidden_layers 40")
    llama = make_hf_dir(tmp_path / "llama", {"model_type": "llama"})
    only_line(
        ascend("convert", "hf2mcore", "--model", "qwen3-14b", "--load", llama, "--save", tmp_path / "p", "--dry-run"),
        "model_type 'llama'",
    )
    no_weights = make_hf_dir(tmp_path / "nw", weights=False)
    only_line(
        ascend(
            "convert", "hf2mcore", "--model", "qwen3-14b", "--load", no_weights, "--save", tmp_path / "q", "--dry-run"
        ),
        "no *.safetensors",
    )
    assert ascend(*argv, "--model", "qwen3-14b").code == 0


def test_convert_refuses_to_overwrite(ascend, world, roomy_disk) -> None:
    target = world.checkpoint(8, 1)
    argv = ["convert", "hf2mcore", "--model", "qwen3-14b", "--load", world.hf, "--save", target, "--dry-run"]
    only_line(ascend(*argv), "already holds a checkpoint", "--overwrite")
    assert ascend(*argv, "--overwrite").code == 0
    mg2hf = world.hf / "mg2hf"
    mg2hf.mkdir()
    (mg2hf / "model.safetensors").write_bytes(b"")
    argv = ["convert", "mcore2hf", "--model", "qwen3-14b", "--load", target, "--hf-dir", world.hf, "--dry-run"]
    only_line(ascend(*argv), "already holds HF weights")
    assert ascend(*argv, "--overwrite").code == 0


def test_mcore2hf_needs_the_full_original_model(ascend, world, tmp_path: Path, roomy_disk) -> None:
    bare = make_hf_dir(tmp_path / "bare", weights=False)
    only_line(
        ascend(
            "convert",
            "mcore2hf",
            "--model",
            "qwen3-14b",
            "--load",
            world.checkpoint(8, 1),
            "--hf-dir",
            bare,
            "--dry-run",
        ),
        "--hf-dir",
        "has no weights",
    )


def test_reshard_target_must_differ(ascend, world, roomy_disk) -> None:
    ckpt = world.checkpoint(8, 1)
    only_line(
        ascend(
            "convert",
            "mcore2mcore",
            "--model",
            "qwen3-14b",
            "--load",
            ckpt,
            "--save",
            world.root / "x",
            "--tp",
            "8",
            "--pp",
            "1",
            "--dry-run",
        ),
        "already TP8 PP1",
    )
    only_line(
        ascend(
            "convert",
            "mcore2mcore",
            "--model",
            "qwen3-14b",
            "--load",
            ckpt,
            "--save",
            ckpt,
            "--tp",
            "4",
            "--pp",
            "2",
            "--dry-run",
        ),
        "--save must differ from --load",
    )


# -- preprocess ----------------------------------------------------------------------------------
def test_preprocess_checks_input_format_and_prefix(ascend, world, tmp_path: Path) -> None:
    data = tmp_path / "biz.jsonl"
    data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n"
    )
    base = ["preprocess", "--input", data, "--tokenizer", world.hf, "--dry-run"]
    only_line(ascend(*base, "--format", "alpaca", "--output-prefix", tmp_path / "o"), "looks like --format openai")
    only_line(
        ascend(*base, "--format", "openai", "--output-prefix", tmp_path / "o_packed_input_ids_document"),
        f"--output-prefix {tmp_path / 'o'}",
    )
    only_line(ascend(*base, "--format", "openai", "--output-prefix", tmp_path), "is a directory")
    only_line(
        ascend(
            "preprocess",
            "--format",
            "openai",
            "--input",
            tmp_path / "none.jsonl",
            "--tokenizer",
            world.hf,
            "--output-prefix",
            tmp_path / "o",
            "--dry-run",
        ),
        "expected a file or directory, found nothing",
    )
    data.write_text('{"messages": [{"speaker": "x"}]}\n')
    only_line(ascend(*base, "--format", "openai", "--output-prefix", tmp_path / "o"), "{role, content}")
    data.write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    result = ascend(*base, "--format", "openai", "--output-prefix", tmp_path / "new" / "o")
    assert result.code == 0, result.err
    assert f"mkdir -p -- {tmp_path / 'new'}" in result.out


# -- speed -----------------------------------------------------------------------------------------
def test_preflight_takes_well_under_a_second(ascend, sft_args) -> None:
    ascend(*sft_args())  # warm imports
    started = time.perf_counter()
    result = ascend(*sft_args())
    elapsed = time.perf_counter() - started
    assert result.code == 0
    assert elapsed < 1.0, f"preflight + compose took {elapsed:.2f}s"

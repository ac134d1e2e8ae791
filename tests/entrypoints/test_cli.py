"""The command as a new user meets it: help texts, bad input, check, releases, environment."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ascend_llm.environment import libgomp_preloads, parse_env_assignments
from ascend_llm.errors import UsageError
from ascend_llm.stages import STAGES
from stagekit import make_checkpoint, make_devices, make_mindspeed_home, parse_command, parse_entry

STAGE_NAMES = [
    "convert",
    "preprocess",
    "pretrain",
    "sft",
    "lora",
    "generate",
    "evaluate",
    "tensorboard",
    "check",
    "selftest",
]


def test_the_stage_names_are_the_contract() -> None:
    assert list(STAGES) == STAGE_NAMES


def test_top_level_help_lists_every_stage_in_one_line(ascend) -> None:
    for argv in ([], ["--help"], ["-h"]):
        result = ascend(*argv)
        assert result.code == 0
        for name in STAGE_NAMES:
            (line,) = [row for row in result.out.splitlines() if row.startswith(f"  {name} ")]
            assert len(line.split(maxsplit=1)[1]) > 20, line
        assert "qwen3-14b" in result.out and "--dry-run" in result.out


@pytest.mark.parametrize("stage", STAGE_NAMES)
def test_stage_help_documents_every_option_with_its_default(stage: str, capsys) -> None:
    parser = STAGES[stage].parser()
    text = parser.format_help()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and "(default: " in action.help, f"{stage} {action.option_strings}"
            assert action.option_strings[0] in text
    assert "-- ARGS" in text or stage == "check"


def test_help_exits_zero_through_argparse(script_env) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ascend_llm", "sft", "--help"],
        capture_output=True,
        text=True,
        env=script_env,
        timeout=60,
    )
    assert done.returncode == 0
    assert re.search(r"qwen3-14b\s+tp=8 pp=1 seq_length=4096 mbs=1 gbs=16", done.stdout)


@pytest.mark.parametrize(
    "argv",
    [
        ["sft"],  # missing options
        ["sft", "--model", "qwen3-14b", "--tp", "zero"],  # bad type
        ["sft", "--model", "nope-1b"],  # unknown preset
        ["convert", "--model", "qwen3-14b"],  # missing action
        ["convert", "frobnicate"],  # unknown action
        ["generate", "--model", "qwen3-14b", "--bogus"],  # unknown option
        ["evaluate", "--task", "mmlu2"],  # unknown task
        ["--frobnicate"],  # not a stage
        ["sft", "--model", "qwen3-14b", "--config", "/nonexistent.yaml"],
        ["preprocess", "--format", "parquet"],
    ],
)
def test_bad_input_is_one_line_and_exit_2_without_traceback(argv, script_env) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ascend_llm", *argv], capture_output=True, text=True, env=script_env, timeout=60
    )
    assert done.returncode == 2, (argv, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ascend-llm: "), lines
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_dry_run_writes_nothing(ascend, world, roomy_disk) -> None:
    save = world.root / "fresh" / "save"
    result = ascend(
        "sft",
        "--model",
        "qwen3-14b",
        "--load",
        world.checkpoint(8, 1),
        "--save",
        save,
        "--data",
        world.sft_data,
        "--tokenizer",
        world.hf,
        "--dry-run",
    )
    assert result.code == 0
    assert not (world.root / "fresh").exists()


def test_passthrough_args_reach_mindspeed_and_replace_ours(ascend, world, roomy_disk) -> None:
    base = [
        *world.sft_args(),
        "--dry-run",
        "--",
    ]
    flags = parse_command(ascend(*base, "--recompute-granularity", "full", "--log-interval", "10").out)
    assert flags["--recompute-granularity"] == ["full"] and flags["--log-interval"] == ["10"]
    result = ascend(*base, "--data-path", "/x")
    assert result.code == 2 and "pass --data instead" in result.err


# -- environment ---------------------------------------------------------------------------------
def test_environment_defaults_are_overridable(ascend, world, roomy_disk) -> None:
    result = ascend(
        *world.sft_args(),
        "--dry-run",
        "--env",
        "HCCL_BUFFSIZE=400",
        "--env",
        "HCCL_CONNECT_TIMEOUT=900",
    )
    out = result.out
    assert 'export CUDA_DEVICE_MAX_CONNECTIONS="${CUDA_DEVICE_MAX_CONNECTIONS:-1}"' in out
    assert 'export PYTORCH_NPU_ALLOC_CONF="${PYTORCH_NPU_ALLOC_CONF:-expandable_segments:True}"' in out
    assert "export HCCL_BUFFSIZE=400" in out and "export HCCL_CONNECT_TIMEOUT=900" in out
    assert "HCCL_CONNECT_TIMEOUT:-1800" not in out
    assert '[ -z "${ASCEND_TOOLKIT_HOME:-}" ] && [ -f /usr/local/Ascend/ascend-toolkit/set_env.sh ]' in out
    assert "/usr/local/Ascend/nnal/atb/set_env.sh" in out
    done = subprocess.run(
        [
            "bash",
            "-c",
            out.split("\ncd -- ")[0] + "\necho $CUDA_DEVICE_MAX_CONNECTIONS $HCCL_CONNECT_TIMEOUT $HCCL_BUFFSIZE",
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "CUDA_DEVICE_MAX_CONNECTIONS": "2"},
    )
    assert done.stdout.split() == ["2", "900", "400"], "the caller's value wins over a default"
    with pytest.raises(UsageError):
        parse_env_assignments(["1BAD=x"])


def test_libgomp_preload_only_on_aarch64_and_only_existing_files(tmp_path: Path, sysroot: Path) -> None:
    site = tmp_path / "site"
    (site / "scikit_learn.libs").mkdir(parents=True)
    sklearn = site / "scikit_learn.libs" / "libgomp-d22c30c5.so.1.0.0"
    sklearn.write_bytes(b"")
    assert libgomp_preloads("x86_64", [str(site)]) == []
    assert libgomp_preloads("aarch64", [str(site)]) == [str(sklearn)]
    system = sysroot / "usr/lib/aarch64-linux-gnu/libgomp.so.1"
    system.parent.mkdir(parents=True)
    system.write_bytes(b"")
    assert libgomp_preloads("aarch64", [str(site)]) == [str(sklearn), str(system)]
    assert libgomp_preloads("aarch64", [str(tmp_path / "empty")]) == [str(system)]
    sklearn.unlink()
    system.unlink()
    assert libgomp_preloads("aarch64", [str(site)]) == []


def test_libgomp_line_in_the_script(ascend, world, roomy_disk, monkeypatch, tmp_path: Path) -> None:
    lib = tmp_path / "libgomp-d22c30c5.so.1.0.0"
    lib.write_bytes(b"")
    monkeypatch.setattr("ascend_llm.stages.base.libgomp_preloads", lambda: [str(lib)])
    argv = [
        *world.sft_args(),
        "--dry-run",
    ]
    assert f'export LD_PRELOAD="${{LD_PRELOAD:+$LD_PRELOAD:}}{lib}"' in ascend(*argv).out
    monkeypatch.setattr("ascend_llm.stages.base.libgomp_preloads", lambda: [])
    assert "LD_PRELOAD" not in ascend(*argv).out


# -- releases --------------------------------------------------------------------------------------
def write_stack(sysroot: Path, release: str, **extra) -> Path:
    path = sysroot / "etc/ascend-llm-stack/stack.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "row": "8.1.RC1",
                "cann": "8.1.RC1",
                "hdk_min": "25.0.RC1",
                "arch": "x86_64",
                "mindspeed_llm": {"release": release},
                **extra,
            }
        )
    )
    return path


def test_release_from_stack_json(ascend, world, sysroot, roomy_disk) -> None:
    argv = [
        *world.sft_args(),
        "--dry-run",
    ]
    write_stack(sysroot, "2.1.0")
    assert parse_command(ascend(*argv).out)["--prompt-type"] == ["qwen"]
    write_stack(sysroot, "2.2.0")
    result = ascend(*argv)
    assert parse_command(result.out)["--prompt-type"] == ["qwen3"]
    assert "on MindSpeed-LLM 2.2.0" in result.out
    write_stack(sysroot, "2.3.0")
    assert "on MindSpeed-LLM 26.0.0" in ascend(*argv, "--release", "26.0.0").out, "--release wins over stack.json"
    for old in ("1.0.0", "2.0.0", "9.9.9"):
        write_stack(sysroot, old)
        result = ascend(*argv)
        assert result.code == 2 and len(result.err.strip().splitlines()) == 1
        assert result.err.startswith(f"ascend-llm: unsupported: MindSpeed-LLM {old}")
        assert "supports 2.1.0, 2.2.0, 2.3.0, 26.0.0, 26.1.0" in result.err


def test_enable_thinking_from_2_2_0(ascend, world, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    argv = ["preprocess", "--format", "openai", "--input", data, "--output-prefix", tmp_path / "o",
            "--tokenizer", world.hf, "--dry-run"]  # fmt: skip
    result = ascend(*argv, "--enable-thinking", "true")
    assert result.code == 2 and "needs MindSpeed-LLM 2.2.0 or later" in result.err
    assert "--enable-thinking" not in parse_command(ascend(*argv).out)
    for release in ("2.2.0", "2.3.0", "26.0.0"):
        flags = parse_command(ascend(*argv, "--release", release).out)
        assert flags["--enable-thinking"] == ["true"], "upstream's Qwen3 instruction example passes true"
        assert flags["--prompt-type"] == ["qwen3"]
        flags = parse_command(ascend(*argv, "--release", release, "--enable-thinking", "false").out)
        assert flags["--enable-thinking"] == ["false"]
        assert "--enable-thinking" not in parse_command(
            ascend(*argv, "--release", release, "--enable-thinking", "none").out
        )
    text = tmp_path / "t.jsonl"
    text.write_text('{"text": "hello"}\n')
    pretrain = ["preprocess", "--format", "pretrain", "--input", text, "--output-prefix", tmp_path / "p",
                "--tokenizer", world.hf, "--dry-run", "--release", "2.2.0"]  # fmt: skip
    assert "--enable-thinking" not in parse_command(ascend(*pretrain).out), "pretraining text has no chat template"


def stage_lines(ascend, world, sysroot, release: str | None, *extra: str) -> dict[str, dict[str, list[str]]]:
    """Entry script and flags of every MindSpeed-LLM stage's dry-run on an image of ``release``."""
    if release:
        write_stack(sysroot, release)
    lora = make_checkpoint(world.root / "lora", 2, 2)
    (lora / "ascend_llm_lora.json").write_text('{"lora_r": 16, "lora_alpha": 32}')
    raw = world.root / "alpaca.jsonl"
    raw.write_text('{"instruction": "i", "input": "", "output": "o"}\n')
    (world.root / "mmlu").mkdir(exist_ok=True)
    m = ["--model", "qwen3-14b"]
    train = ["--save", world.out, "--tokenizer", world.hf]
    commands = {
        "convert hf2mcore": ["convert", "hf2mcore", *m, "--load", world.hf, "--save", world.out],
        "convert mcore2hf": ["convert", "mcore2hf", *m, "--load", world.checkpoint(8, 1), "--hf-dir", world.hf],
        "convert mcore2mcore": ["convert", "mcore2mcore", *m, "--load", world.checkpoint(8, 1), "--save", world.out,
                                "--tp", "2", "--pp", "2"],
        "convert lora-merge": ["convert", "lora-merge", *m, "--load", world.checkpoint(2, 2), "--lora-load", lora,
                               "--to", "hf", "--hf-dir", world.hf],
        "preprocess": ["preprocess", "--format", "alpaca", "--input", raw, "--output-prefix", world.root / "p",
                       "--tokenizer", world.hf],
        "pretrain": ["pretrain", *m, "--data", world.pretrain_data, *train, "--tp", "8", "--pp", "1"],
        "sft": [*world.sft_args()],
        "lora": ["lora", *m, "--load", world.checkpoint(2, 2), "--data", world.sft_data, *train],
        "generate": ["generate", *m, "--load", world.checkpoint(4, 1), "--tokenizer", world.hf],
        "evaluate": ["evaluate", *m, "--task", "mmlu", "--load", world.checkpoint(2, 1), "--tokenizer", world.hf,
                     "--data", world.root / "mmlu"],
    }  # fmt: skip
    out = {}
    for name, argv in commands.items():
        result = ascend(*argv, "--dry-run", *extra)
        assert result.code == 0, f"{name}: {result.err}"
        entry = parse_entry(result.out)
        out[name] = {"entry": [entry], **parse_command(result.out)}
    return out


V2_DROPS = ("--use-mcore-models", "--model-type", "--spec", "--params-dtype", "--tokenizer-model")


@pytest.mark.parametrize("how", ["stack.json", "--release"])
def test_26_0_0_stages_run_26_0_0s_entry_scripts_and_flags(ascend, world, sysroot, roomy_disk, how: str) -> None:
    """On an image whose stack.json says 26.0.0 the stages pick 26.0.0 without --release."""
    lines = stage_lines(
        ascend, world, sysroot, *(("26.0.0",) if how == "stack.json" else (None, "--release", "26.0.0"))
    )
    for name in ("convert hf2mcore", "convert mcore2hf"):
        assert lines[name]["entry"] == ["convert_ckpt_v2.py"], name
        assert not set(V2_DROPS) & set(lines[name]), f"{name}: convert_ckpt_v2.py takes none of {V2_DROPS}"
    assert lines["convert mcore2hf"]["--save-dir"] == [f"{world.hf}/mg2hf"], "never over the original weights"
    assert lines["convert mcore2hf"]["--hf-cfg-dir"] == [str(world.hf)]
    assert lines["convert lora-merge"]["entry"] == lines["convert mcore2mcore"]["entry"] == ["convert_ckpt.py"]
    for name in ("pretrain", "sft", "lora", "generate", "evaluate"):
        assert lines[name]["--transformer-impl"] == ["local"], name
        assert "--ckpt-format" not in lines[name], "26.0.0 still forces torch; 26.1.0's scripts pass it"
    for name in ("sft", "lora"):
        assert "--no-pad-to-seq-lengths" in lines[name] and "--variable-seq-lengths" not in lines[name]
        assert lines[name]["--prompt-type"] == ["qwen3"]
    assert lines["preprocess"]["--enable-thinking"] == ["true"]


def test_2_3_0_differs_from_26_0_0_where_its_examples_do(ascend, world, sysroot, roomy_disk) -> None:
    lines = stage_lines(ascend, world, sysroot, "2.3.0")
    assert lines["convert hf2mcore"]["entry"] == lines["convert mcore2hf"]["entry"] == ["convert_ckpt_v2.py"]
    assert "--hf-cfg-dir" not in lines["convert mcore2hf"], "2.3.0's convert_ckpt_v2.py has no --hf-cfg-dir"
    for name in ("pretrain", "sft", "lora", "generate", "evaluate"):
        assert "--transformer-impl" not in lines[name], "2.3.0 forces the local implementation itself"
    assert "--no-pad-to-seq-lengths" in lines["sft"]
    old = stage_lines(ascend, world, sysroot, "2.1.0")
    assert old["convert hf2mcore"]["entry"] == ["convert_ckpt.py"] and "--variable-seq-lengths" in old["sft"]


def test_26_1_0_writes_the_torch_checkpoint_format(ascend, world, sysroot, roomy_disk) -> None:
    lines = stage_lines(ascend, world, sysroot, "26.1.0")
    for name in ("pretrain", "sft", "lora", "generate", "evaluate"):
        assert lines[name]["--ckpt-format"] == ["torch"], name
    assert lines["convert lora-merge"]["entry"] == ["convert_ckpt_v2.py"]
    assert lines["convert lora-merge"]["--hf-cfg-dir"] == [str(world.hf)]


# -- check -----------------------------------------------------------------------------------------
def test_check_on_a_bare_machine_names_every_fix(ascend) -> None:
    result = ascend("check")
    assert result.code == 1
    assert "stack.json is missing" in result.err
    assert "no NPU visible" in result.err and "--device /dev/davinci0" in result.err
    assert "-v /usr/local/Ascend/driver:/usr/local/Ascend/driver:ro" in result.err


def test_check_on_a_complete_machine_passes(ascend, sysroot: Path, monkeypatch) -> None:
    from importlib.metadata import version

    write_stack(sysroot, "2.1.0", torch=version("torch"), transformers=version("transformers"))
    info = sysroot / "usr/local/Ascend/ascend-toolkit/latest/x86_64-linux/ascend_toolkit_install.info"
    info.parent.mkdir(parents=True)
    info.write_text("package_name=Ascend-cann-toolkit\nversion=8.1.RC1\n")
    driver = sysroot / "usr/local/Ascend/driver"
    (driver / "lib64").mkdir(parents=True)
    (driver / "version.info").write_text("Version=25.0.rc1.1\nascendhal_version=7.35.23\n")
    for path in ("usr/local/dcmi", "usr/local/bin/npu-smi", "etc/ascend_install.info"):
        (sysroot / path).parent.mkdir(parents=True, exist_ok=True)
        (sysroot / path).write_text("")
    make_devices(sysroot, 8)
    make_mindspeed_home()
    result = ascend("check")
    assert result.code == 0, result.err
    assert result.err == "" and result.out.count("ok ") >= 8
    report = json.loads(ascend("check", "--json").out)
    assert report["ok"] is True
    (driver / "version.info").write_text("Version=24.1.0\n")
    result = ascend("check")
    assert result.code == 1
    assert "host driver 24.1.0 is older than this image's HDK minimum 25.0.RC1" in result.err
    write_stack(sysroot, "2.1.0", torch="2.1.0", transformers=version("transformers"))
    result = ascend("check")
    assert "torch " in result.err and "image label says 2.1.0" in result.err


def test_ascend_version_order() -> None:
    from ascend_llm.stages.check import ascend_version_key as key

    assert key("24.1.RC2") < key("24.1.0") < key("25.0.RC1") <= key("25.0.rc1.1") < key("25.0.0") < key("25.2.0")
    assert key("garbage") is None


# -- tensorboard -------------------------------------------------------------------------------------
def test_tensorboard(ascend, tmp_path: Path) -> None:
    result = ascend("tensorboard", "--logdir", tmp_path, "--dry-run")
    assert result.code == 0
    assert f"exec tensorboard \\\n    --logdir {tmp_path} \\\n    --host 0.0.0.0 \\\n    --port 6006" in result.out
    result = ascend("tensorboard", "--logdir", tmp_path / "none", "--dry-run")
    assert result.code == 2 and "--logdir" in result.err


def test_multi_node_logs_do_not_collide(ascend, world, roomy_disk) -> None:
    from ascend_llm.cli import build_request
    from ascend_llm.stages.base import log_file

    ckpt = make_checkpoint(world.root / "c", 8, 1)
    req = build_request(
        STAGES["sft"],
        [
            "--model",
            "qwen3-14b",
            "--load",
            str(ckpt),
            "--save",
            str(world.out),
            "--data",
            world.sft_data,
            "--tokenizer",
            str(world.hf),
            "--nnodes",
            "2",
            "--node-rank",
            "1",
            "--master-addr",
            "n0",
        ],
    )
    assert log_file(req).name.startswith("sft-node1-")


def test_no_preflight_composes_for_paths_that_exist_elsewhere(ascend) -> None:
    argv = [
        "sft",
        "--model",
        "qwen3-14b",
        "--load",
        "/ckpt/tp8pp1",
        "--save",
        "/out/sft",
        "--data",
        "/data/alpaca",
        "--tokenizer",
        "/models/Qwen3-14B",
    ]
    assert ascend(*argv, "--dry-run").code == 2, "the same command with preflight fails: nothing exists here"
    result = ascend(*argv, "--dry-run", "--no-preflight")
    assert result.code == 0 and "# preflight skipped (--no-preflight)" in result.out
    assert parse_command(result.out)["--load"] == ["/ckpt/tp8pp1"]
    result = ascend(*argv, "--no-preflight")
    assert result.code == 2 and "only goes with --dry-run" in result.err


def test_missing_transformers_is_noted(ascend, world, roomy_disk, monkeypatch) -> None:
    import ascend_llm.preflight as preflight

    monkeypatch.setattr(preflight.importlib.util, "find_spec", lambda name: None)
    result = ascend(
        *world.sft_args(),
        "--dry-run",
    )
    assert result.code == 0
    assert "transformers is not installed here, so the model-type check was skipped" in result.err


def test_unreadable_files_are_one_line(ascend, tmp_path: Path, script_env) -> None:
    binary = tmp_path / "c.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    result = ascend("sft", "--config", binary)
    assert result.code == 2 and "not a UTF-8 text file" in result.err
    result = ascend("sft", "--model", str(binary))
    assert result.code == 2 and result.err.startswith(f"ascend-llm: preset {binary}: cannot be read")
    odd = tmp_path / "odd"
    odd.write_bytes(b"\x7fELF-not-really")
    odd.chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-m", "ascend_llm", str(odd)], capture_output=True, text=True, env=script_env, timeout=60
    )
    assert done.returncode == 126 and "cannot run" in done.stderr and "Traceback" not in done.stderr

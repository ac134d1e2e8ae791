"""runtime layer: the ascend-llm stage runner is the entrypoint and answers."""

from __future__ import annotations

import subprocess
from typing import Any

from ascend_stack.container import docker_cli

# A stage composed for paths that exist only on a training host: --no-preflight skips their checks.
SFT_DRY_RUN = ("ascend-llm sft --model qwen3-0.6b --load /ckpt/qwen3-0.6b-mcore --save /ckpt/sft --data /data/alpaca"
               " --tokenizer /models/Qwen3-0.6B --dry-run --no-preflight")  # fmt: skip


def _last(out: Any) -> str:
    return (out.stderr.strip().splitlines() or out.stdout.strip().splitlines() or ["no output"])[-1]


def test_entrypoint_is_ascend_llm(image_config: dict[str, Any]) -> None:
    got = (image_config.get("Entrypoint"), image_config.get("Cmd"))
    assert got == (["ascend-llm"], ["--help"]), f"ENTRYPOINT/CMD are {got}, not ['ascend-llm'] / ['--help']"


def test_plain_run_prints_the_help(image: str) -> None:
    out = subprocess.run([docker_cli(), "run", "--rm", image], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"`docker run {image}` exited {out.returncode}: {_last(out)}"
    assert "usage: ascend-llm" in out.stdout, f"`docker run {image}` printed no ascend-llm usage"


def test_ascend_llm_help(host: Any) -> None:
    out = host.run("ascend-llm --help")
    assert out.rc == 0, f"ascend-llm --help exited {out.rc}: {_last(out)}"


def test_sft_help(host: Any) -> None:
    out = host.run("ascend-llm sft --help")
    assert out.rc == 0, f"ascend-llm sft --help exited {out.rc}: {_last(out)}"


def test_sft_dry_run_prints_the_launch_script(user_host: Any) -> None:
    """As the image's own user, as a stage runs."""
    out = user_host.run(SFT_DRY_RUN)
    assert out.rc == 0, f"`{SFT_DRY_RUN}` exited {out.rc}: {_last(out)}"
    missing = [w for w in ("torchrun", "posttrain_gpt.py", "--stage sft") if w not in out.stdout]
    assert not missing, f"the sft dry run's script lacks {', '.join(missing)}"


def test_pipeline_ships_its_examples_and_can_draw_loss_curves(host: Any) -> None:
    out = host.run("ascend-llm pipeline --example sft")
    assert out.rc == 0, f"ascend-llm pipeline --example sft exited {out.rc}: {_last(out)}"
    assert "stage: sft" in out.stdout, "the packaged full-SFT example is not the pipeline file"
    code = "import matplotlib.backends.backend_agg, tensorboard.backend.event_processing.event_file_loader"
    out = host.run(f"/opt/venv/bin/python -c '{code}'")
    assert out.rc == 0, f"the report's loss curves need matplotlib and tensorboard (the image extra): {_last(out)}"

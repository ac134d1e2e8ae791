"""``ascend-llm tensorboard``: serve the loss curves training stages write to <save>/tensorboard."""

from __future__ import annotations

import shutil

from ascend_llm import preflight
from ascend_llm.options import Option, common, opt, positive_int
from ascend_llm.script import Arg, LaunchScript
from ascend_llm.stages.base import Stage, StageRequest, base_script


class TensorboardStage(Stage):
    """Serve the events training stages write to <save>/tensorboard."""

    name = "tensorboard"
    summary = "Serve TensorBoard for a training run's <save>/tensorboard (docker run -p 6006:6006)."
    description = "Training stages write TensorBoard events to <save>/tensorboard unless --tensorboard-dir none."

    def options(self) -> list[Option]:
        return [
            opt(
                "logdir",
                help="event directory (a run's <save>/tensorboard, or a parent of several)",
                metavar="DIR",
                default_text="required",
            ),
            opt("port", help="port to listen on", type=positive_int, default=6006, metavar="PORT"),
            opt("host", help="address to bind", default="0.0.0.0", metavar="ADDR"),
            *common("config", "dry_run", "no_preflight", "env"),
        ]

    def needs_model(self, action: str | None) -> bool:
        return False

    def uses_mindspeed(self, action: str | None) -> bool:
        return False

    def preset_stage(self, action: str | None) -> str | None:
        return None

    def validate(self, req: StageRequest) -> None:
        self.require(req, "logdir")

    def preflight(self, req: StageRequest) -> list[str]:
        problems = preflight.path_exists(
            req.opts["logdir"], "--logdir", "directory", "mount the training run's save directory"
        )
        if not req.dry_run and not shutil.which("tensorboard"):
            problems.append(
                "tensorboard is not installed here: pip install tensorboard (or run it on the "
                "host against the same directory)"
            )
        return problems

    def compose(self, req: StageRequest) -> LaunchScript:
        """No MindSpeed-LLM environment is needed, only the event directory."""
        o = req.opts
        script = base_script(
            req, f"http://{o['host']}:{o['port']}/", ["tensorboard"], distributed=False, mindspeed=False
        )
        script.env = [v for v in script.env if v.name not in ("CUDA_DEVICE_MAX_CONNECTIONS",)]
        script.ld_preload = []
        script.args = [
            Arg("--logdir", (o["logdir"],)),
            Arg("--host", (o["host"],)),
            Arg("--port", (str(o["port"]),)),
        ] + [Arg(t) for t in req.extra]
        return script

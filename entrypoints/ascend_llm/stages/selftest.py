"""``ascend-llm selftest comm``: prove the nodes reach each other before a long multi-node job.

It launches ``torchrun`` with exactly the rendezvous a training stage would derive (flags, plain
environment, MindCluster, Volcano or PyTorchJob variables; see ``launcher.py``), and every process
runs ``comm_worker``: a check-in through torchrun's store, ``init_process_group`` (HCCL on NPUs,
gloo on the CPU), an all-reduce whose result every rank checks, and a timed bandwidth figure.
The stage reads the workers' marker lines and torchrun's own errors and ends with one line: the
world size and bandwidth, or the failing rank(s) or node(s) and the likely cause.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from typing import Any, Mapping

from ascend_llm import preflight
from ascend_llm.environment import EnvVar, parse_env_assignments, stage_env
from ascend_llm.errors import UsageError
from ascend_llm.options import Option, common, opt, positive_int
from ascend_llm.release import read_stack
from ascend_llm.script import Arg, LaunchScript, cann_setup
from ascend_llm.stages.base import Stage, StageRequest
from ascend_llm.stages.comm_report import MARK, likely_cause, spans
from ascend_llm.system import visible_npu_count

WORKER = "ascend_llm.stages.comm_worker"
DEFAULT_TIMEOUT = 300
HCCL_TIMEOUT_RANGE = (120, 7200)  # CANN accepts HCCL_CONNECT_TIMEOUT only in this range

# torchrun's own failures, before any worker runs (the agent's TCPStore at MASTER_ADDR:MASTER_PORT)
AGENT_ERRORS = (
    ("clients", re.compile(r"Timed out after (\d+) seconds waiting for clients\. (\d+)/(\d+) clients joined")),
    ("unreachable", re.compile(r"timed out after (\d+)ms while trying to connect to \(([^,]+), (\d+)\)")),
    ("port", re.compile(r"EADDRINUSE|address already in use|failed to listen on any local network address")),
    ("resolve", re.compile(r"Name or service not known|Temporary failure in name resolution|nodename nor servname")),
)


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError(text)
    return value


positive_float.__name__ = "number > 0"


class CommWatch:
    """Reads the run's output: the workers' marker lines and torchrun's agent errors."""

    def __init__(self) -> None:
        self.buffer = b""
        self.records: list[dict[str, Any]] = []
        self.agent: dict[str, Any] = {}

    def __call__(self, chunk: bytes) -> None:
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.line(line.decode("utf-8", errors="replace"))

    def flush(self) -> None:
        if self.buffer:
            self.line(self.buffer.decode("utf-8", errors="replace"))
            self.buffer = b""

    def line(self, text: str) -> None:
        at = text.find(MARK)
        if at >= 0:
            try:
                record = json.loads(text[at + len(MARK) :])
            except ValueError:
                return
            if isinstance(record, dict):
                self.records.append(record)
            return
        for kind, pattern in AGENT_ERRORS:
            match = pattern.search(text)
            if match and kind not in self.agent:
                self.agent[kind] = match.groups()

    def of(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == event]


def verdict(req: StageRequest, watch: CommWatch, code: int) -> str:
    """The one line that ends ``selftest comm``: what was proven, or who failed and why."""
    rdzv = req.rdzv
    assert rdzv is not None
    backend = req.opts["backend_resolved"]
    where = f"{rdzv.master_addr}:{rdzv.master_port}"
    node = f"node {rdzv.node_rank}"
    timeout = req.opts["timeout"]
    summaries = watch.of("summary")
    ranks = watch.of("rank")
    if code == 0:
        if summaries:
            s = summaries[-1]
            return (
                f"selftest comm passed: world size {s['world_size']} ({s['nnodes']} node(s) x "
                f"{s['local_world_size']} process(es)), {backend}, all-reduce correct on every rank; "
                f"bus bandwidth {s['busbw']:.2f} GB/s for {s['bytes'] / 2**20:g} MiB"
            )
        shown = spans([r["rank"] for r in ranks]) or "?"
        world = ranks[0]["world_size"] if ranks else rdzv.world_size
        return (
            f"selftest comm passed on {node}: ranks {shown} of world size {world} all-reduced correctly "
            f"({backend}); node 0 prints the table for every rank"
        )
    fails = watch.of("fail")
    if fails:
        missing = sorted({m for f in fails for m in f.get("missing", [])})
        if missing:
            nodes = sorted({m // max(rdzv.nproc_per_node, 1) for m in missing})
            return (
                f"selftest comm failed: rank(s) {spans(missing)} (node(s) {spans(nodes)}) never reached the "
                f"rendezvous at {where} within {timeout} s; likely cause: {likely_cause(backend, 'check-in', '')}"
            )
        wrong = sorted({w for f in fails for w in f.get("wrong", [])})
        if wrong:
            return (
                f"selftest comm failed: rank(s) {spans(wrong)} got a wrong all-reduce result; "
                f"likely cause: {likely_cause(backend, 'result', '')}"
            )
        first = fails[0]
        failed = sorted({f["rank"] for f in fails})
        hosts = ", ".join(sorted({str(f.get("host")) for f in fails}))
        return (
            f"selftest comm failed: rank(s) {spans(failed)} on {hosts} ({node}) in {first['phase']}: "
            f"{first['error']}; likely cause: {first['cause']}"
        )
    agent = watch.agent
    if "clients" in agent:
        _, joined, total = agent["clients"]
        absent = int(total) - int(joined)
        return (
            f"selftest comm failed on {node}: only {joined} of {total} nodes reached the rendezvous at {where} "
            f"within {timeout} s ({absent} missing); likely cause: `selftest comm` is not running on the other "
            f"node(s), they use another --master-addr/--master-port/--nnodes, or a firewall blocks port "
            f"{rdzv.master_port}"
        )
    if "port" in agent:
        return (
            f"selftest comm failed on {node}: port {rdzv.master_port} is already in use here; "
            f"likely cause: another job holds it: pass another --master-port (on every node)"
        )
    if "resolve" in agent:
        return (
            f"selftest comm failed on {node}: the master address {rdzv.master_addr} does not resolve here; "
            f"likely cause: a typo in --master-addr/MASTER_ADDR, or a name only the other host knows: use its IP"
        )
    if "unreachable" in agent:
        return (
            f"selftest comm failed on {node}: could not reach the rank-0 node at {where} within {timeout} s; "
            f"likely cause: node 0 is not running `selftest comm`, --master-addr is not its address as seen "
            f"from here, or a firewall blocks port {rdzv.master_port}"
        )
    return (
        f"selftest comm failed on {node} (exit {code}) before any rank reported; likely cause: "
        f"{likely_cause(backend, 'connect', '')}; read the output above"
    )


class SelftestStage(Stage):
    """``selftest comm``: an all-reduce over the training rendezvous, through torchrun."""

    name = "selftest"
    summary = "Prove the hosts reach each other: all-reduce + bandwidth over the training rendezvous (comm)."
    description = (
        "Run it on every node, with the rendezvous options a training stage would get (or under the same\n"
        "cluster launcher), before a long multi-node job. It starts torchrun like pretrain/sft/lora do; every\n"
        "process checks in, joins the process group (HCCL on NPUs, gloo on the CPU), all-reduces rank+1 and\n"
        "checks the sum, then times --iters all-reduces of --size-mb MiB. Node 0 prints a table of every rank.\n"
        "It ends with one line: world size and bus bandwidth, or the failing rank(s)/node(s) and the likely\n"
        "cause (network interface: HCCL_SOCKET_IFNAME/GLOO_SOCKET_IFNAME, HCCL ports, master address, timeout).\n"
        "Exit 0 when every rank passed, 1 otherwise; no phase waits longer than --timeout.\n\n"
        "  ascend-llm selftest comm --nnodes 2 --node-rank 0 --master-addr 10.0.0.1   # on node 0\n"
        "  ascend-llm selftest comm --nnodes 2 --node-rank 1 --master-addr 10.0.0.1   # on node 1"
    )
    actions = ("comm",)
    action_help = "comm: all-reduce across every process of the rendezvous, then a bandwidth figure"

    def options(self) -> list[Option]:
        return [
            *common("model"),
            opt(
                "for_stage",
                "--for",
                help="with --model: take --nproc-per-node/--nnodes from the preset's section for this stage",
                choices=("pretrain", "sft", "lora"),
                default="pretrain",
            ),
            opt(
                "backend",
                help="hccl (NPUs), gloo (CPU, tests the host network only) or auto: hccl when an NPU is visible",
                choices=("auto", "hccl", "gloo"),
                default="auto",
            ),
            opt(
                "timeout",
                help="seconds each phase (rendezvous, check-in, connect, all-reduce, bandwidth) may take; "
                "every node must start within it",
                type=positive_int,
                default=DEFAULT_TIMEOUT,
                metavar="SECONDS",
            ),
            opt("size_mb", help="size of each bandwidth all-reduce", type=positive_float, default=64, metavar="MiB"),
            opt("iters", help="timed all-reduces of the bandwidth test", type=positive_int, default=10, metavar="N"),
            *[
                o.with_help(o.help, default_text="from --model's --for stage, else the visible NPUs, else 1")
                if o.dest == "nproc_per_node"
                else o
                for o in common("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port")
            ],
            *common("config", "dry_run", "log_dir", "env"),
        ]

    def epilog(self) -> str:
        lines = super().epilog().splitlines()
        return "\n".join(
            "-- ARGS...               not taken: the worker has no upstream program to pass them to"
            if line.startswith("-- ARGS")
            else line
            for line in lines
        )

    def needs_model(self, action: str | None) -> bool:
        return False

    def uses_mindspeed(self, action: str | None) -> bool:
        return False

    def uses_torchrun(self, action: str | None) -> bool:
        return True

    def preset_stage(self, action: str | None) -> str | None:
        return "pretrain"

    def preset_section(self, action: str | None, chosen: Mapping[str, Any]) -> str | None:
        return str(chosen.get("for_stage") or "pretrain")

    def validate(self, req: StageRequest) -> None:
        """Pick the backend and, unless something set it, one process per visible NPU."""
        rdzv = req.rdzv
        assert rdzv is not None
        if req.extra:
            raise UsageError(f"selftest comm takes no `-- {' '.join(req.extra)}`: see ascend-llm selftest --help")
        npus = visible_npu_count()
        backend = req.opts.get("backend") or "auto"
        if backend == "auto":
            backend = "hccl" if npus else "gloo"
        req.opts["backend_resolved"] = backend
        if "nproc_per_node" not in rdzv.sources:
            rdzv.nproc_per_node = npus if backend == "hccl" and npus else 1
            req.opts["nproc_per_node"] = rdzv.nproc_per_node
        if backend == "gloo" and req.opts.get("backend") == "auto":
            req.notes.append("no NPU visible here: gloo on the CPU tests the host network, not the NPU links")

    def preflight(self, req: StageRequest) -> list[str]:
        rdzv = req.rdzv
        assert rdzv is not None
        problems: list[str] = []
        if req.opts["backend_resolved"] == "hccl":
            problems += preflight.devices(rdzv.nproc_per_node, rdzv.nnodes, req.dry_run)
        problems += preflight.writable_dir(req.opts.get("log_dir"), "--log-dir")
        if not req.dry_run and not shutil.which("torchrun"):
            problems.append("torchrun is not on PATH: install torch into this environment (the image has it)")
        return problems

    def compose(self, req: StageRequest) -> LaunchScript:
        """torchrun with the training rendezvous and a bounded rendezvous timeout, then the worker."""
        o, rdzv = req.opts, req.rdzv
        assert rdzv is not None
        backend = o["backend_resolved"]
        preset_env = req.preset.stage(o.get("for_stage") or "pretrain").env if req.preset else {}
        env = stage_env(True, preset_env, parse_env_assignments(o.get("env")))
        timeout = o["timeout"]
        for index, var in enumerate(env):
            if var.name == "HCCL_CONNECT_TIMEOUT" and var.overridable:
                low, high = HCCL_TIMEOUT_RANGE
                value = str(min(max(timeout, low), high))
                env[index] = EnvVar(var.name, value, "HCCL link setup: --timeout, within 120-7200")
        if backend == "gloo":
            env.append(
                EnvVar("TORCH_DEVICE_BACKEND_AUTOLOAD", "0", "gloo on the CPU: do not load torch_npu (no NPU here)")
            )
        title = (
            f"all-reduce over {rdzv.world_size} process(es) ({rdzv.nnodes} node(s) x {rdzv.nproc_per_node}), "
            f"{backend}, this is node {rdzv.node_rank}, master {rdzv.master_addr}:{rdzv.master_port}"
        )
        script = LaunchScript(
            title=f"ascend-llm {req.label}: {title}",
            program=["torchrun"],
            env=env,
            source_cann=backend == "hccl",
            cann_scripts=cann_setup(read_stack()),
        )
        script.notes = list(req.notes)
        if rdzv.launcher != "none":
            script.notes.append(
                f"rendezvous from {rdzv.launcher}: " + ", ".join(f"{k}={v}" for k, v in rdzv.sources.items())
            )
        script.launcher_args = [Arg(flag, (value,)) for flag, value in rdzv.torchrun_args()]
        script.launcher_args += [Arg("--rdzv_conf", (f"timeout={timeout}",)), Arg("--module")]
        script.entry = WORKER
        script.args = [
            Arg("--backend", (backend,)),
            Arg("--timeout", (str(timeout),)),
            Arg("--size-mb", (f"{o['size_mb']:g}",)),
            Arg("--iters", (str(o["iters"]),)),
        ]
        return script

    def watcher(self, req: StageRequest) -> CommWatch:
        watch = CommWatch()
        req.state["watch"] = watch
        return watch

    def after_run(self, req: StageRequest, code: int) -> None:
        watch = req.state.get("watch")
        if not isinstance(watch, CommWatch):
            return
        watch.flush()
        sys.stderr.write(f"ascend-llm: {verdict(req, watch, code)}\n")

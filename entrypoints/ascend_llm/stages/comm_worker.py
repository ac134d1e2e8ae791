"""The process torchrun starts for ``ascend-llm selftest comm`` (one per rank).

``torchrun ... --module ascend_llm.stages.comm_worker --backend gloo --timeout 300 ...``. Every rank:

1. *check-in*: writes its key into torchrun's own store (the TCPStore at MASTER_ADDR:MASTER_PORT that
   the training processes use as well) and waits until every rank of the world has written its key,
   so a rank that never started is named instead of waited for;
2. *connect*: ``init_process_group`` with env:// exactly as Megatron does (HCCL on NPUs, gloo on the CPU);
3. *all-reduce*: each rank contributes ``rank + 1``; every element must come back as W(W+1)/2;
4. *bandwidth*: times ``--iters`` all-reduces of ``--size-mb`` MiB (after one warm-up);
5. *report*: posts its result to the store; rank 0 waits for all of them and prints the table.

Each phase has its own deadline (``--timeout`` seconds) enforced by a watchdog thread, so a missing or
stuck peer ends the run with a line naming the phase instead of a hang. Results and failures are also
printed as ``ascend-llm-selftest {json}`` lines, which the stage reads to write its one-line verdict.
Runs on the image's Python (3.8+); imports torch only inside ``main``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import socket
import sys
import threading
import time
from typing import Any, Sequence

from ascend_llm.stages.comm_report import MARK, likely_cause, spans

EXIT_FAILED = 1
SMALL = 1024  # elements of the correctness all-reduce


def emit(record: dict[str, Any]) -> None:
    """One machine-readable line for the stage (stdout, flushed at once)."""
    sys.stdout.write(MARK + json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.flush()


def say(text: str) -> None:
    sys.stdout.write(f"selftest comm: {text}\n")
    sys.stdout.flush()


class Watchdog:
    """Ends the process if a phase runs past its deadline, after reporting which phase it was."""

    def __init__(self, info: dict[str, Any], timeout: float) -> None:
        self.info = info
        self.timeout = timeout
        self.phase = "start"
        self.deadline = time.monotonic() + timeout
        self.lock = threading.Lock()
        self.done = False
        thread = threading.Thread(target=self.watch, name="selftest-watchdog", daemon=True)
        thread.start()

    def enter(self, phase: str) -> None:
        with self.lock:
            self.phase = phase
            self.deadline = time.monotonic() + self.timeout

    def stop(self) -> None:
        with self.lock:
            self.done = True

    def watch(self) -> None:
        while True:
            time.sleep(0.2)
            with self.lock:
                if self.done:
                    return
                late = time.monotonic() > self.deadline
                phase = self.phase
            if late:
                error = f"{phase} did not finish within {self.timeout:g} s"
                fail(self.info, phase, error, timeout=True)
                os._exit(EXIT_FAILED)


def fail(info: dict[str, Any], phase: str, error: str, timeout: bool = False, **extra: Any) -> None:
    """Report this rank's failure: a human line and a marker line."""
    cause = likely_cause(info.get("backend", "gloo"), "timeout" if timeout and phase != "check-in" else phase, error)
    record = dict(info, event="fail", phase=phase, error=error, cause=cause, **extra)
    emit(record)
    say(f"rank {info.get('rank')} (node {info.get('node')}, {info.get('host')}) FAILED in {phase}: {error}")


def short_error(exc: BaseException) -> str:
    """The first meaningful line of an exception (torch's C++ errors carry long stack dumps)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = next((line for line in lines if not line.startswith(("Exception raised from", "frame #"))), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ascend_llm.stages.comm_worker", description=__doc__)
    parser.add_argument("--backend", choices=("gloo", "hccl"), required=True)
    parser.add_argument("--timeout", type=float, required=True, help="seconds each phase may take")
    parser.add_argument("--size-mb", type=float, default=64.0)
    parser.add_argument("--iters", type=int, default=10)
    return parser.parse_args(argv)


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rank, world = env_int("RANK", 0), env_int("WORLD_SIZE", 1)
    local_rank, local_world = env_int("LOCAL_RANK", 0), env_int("LOCAL_WORLD_SIZE", 1)
    node = env_int("GROUP_RANK", rank // max(local_world, 1))
    master = f"{os.environ.get('MASTER_ADDR', 'localhost')}:{os.environ.get('MASTER_PORT', '')}"
    info: dict[str, Any] = {
        "rank": rank,
        "world_size": world,
        "node": node,
        "local_rank": local_rank,
        "local_world_size": local_world,
        "nnodes": env_int("GROUP_WORLD_SIZE", max(1, world // max(local_world, 1))),
        "host": socket.gethostname(),
        "backend": args.backend,
        "master": master,
    }
    dog = Watchdog(info, args.timeout)
    try:
        code = run(args, info, dog)
    finally:
        dog.stop()
    return code


def run(args: argparse.Namespace, info: dict[str, Any], dog: Watchdog) -> int:
    rank, world = info["rank"], info["world_size"]
    timeout = datetime.timedelta(seconds=args.timeout)
    dog.enter("import")
    try:
        import torch
        import torch.distributed as dist

        if args.backend == "hccl":
            import torch_npu  # noqa: F401  (registers the NPU device and the HCCL backend)
    except Exception as exc:  # an import that fails here fails the same way in training
        fail(info, "import", short_error(exc))
        return EXIT_FAILED

    dog.enter("device")
    try:
        if args.backend == "hccl":
            torch.npu.set_device(info["local_rank"])
            device = torch.device(f"npu:{info['local_rank']}")
        else:
            device = torch.device("cpu")
    except Exception as exc:
        fail(info, "device", short_error(exc))
        return EXIT_FAILED
    info["device"] = str(device)

    def sync() -> None:
        if device.type == "npu":
            torch.npu.synchronize()

    # 1. check-in through torchrun's store: name the ranks that never arrive
    dog.enter("check-in")
    host, _, port = info["master"].rpartition(":")
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none") + "/" + os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    try:
        client = dist.TCPStore(host, int(port), None, False, timeout)
        store = dist.PrefixStore(f"ascend-llm-selftest/{run_id}", client)
        store.set(f"checkin/{rank}", info["host"])
    except Exception as exc:
        fail(info, "check-in", f"cannot use the rendezvous store at {info['master']}: {short_error(exc)}")
        return EXIT_FAILED
    missing = wait_for_keys(store, "checkin", world, args.timeout * 0.9)
    if missing:
        fail(
            info,
            "check-in",
            f"rank(s) {spans(missing)} did not start within {args.timeout:g} s",
            missing=missing,
        )
        return EXIT_FAILED

    # 2. connect: the process group a training job creates
    dog.enter("connect")
    try:
        dist.init_process_group(args.backend, rank=rank, world_size=world, timeout=timeout)
    except Exception as exc:
        fail(info, "connect", short_error(exc))
        return EXIT_FAILED

    # 3. correctness: every rank adds rank + 1
    dog.enter("all-reduce")
    expected = world * (world + 1) / 2
    try:
        small = torch.full((SMALL,), float(rank + 1), dtype=torch.float32, device=device)
        dist.all_reduce(small)
        sync()
        got = small.cpu()
        ok = bool(torch.all(got == expected))
        value = float(got[0]) if ok else float(got[(got != expected).nonzero()[0][0]])
    except Exception as exc:
        fail(info, "all-reduce", short_error(exc))
        return EXIT_FAILED

    # 4. bandwidth: --iters all-reduces of --size-mb MiB after one warm-up
    dog.enter("bandwidth")
    size = max(1, int(args.size_mb * 1024 * 1024) // 4)
    try:
        big = torch.ones(size, dtype=torch.float32, device=device)
        dist.all_reduce(big)
        sync()
        dist.barrier()
        start = time.perf_counter()
        for _ in range(args.iters):
            dist.all_reduce(big)
        sync()
        seconds = (time.perf_counter() - start) / max(args.iters, 1)
    except Exception as exc:
        fail(info, "bandwidth", short_error(exc))
        return EXIT_FAILED
    nbytes = size * 4
    mine = dict(info, event="rank", ok=ok, value=value, expected=expected, seconds=seconds, bytes=nbytes)
    emit(mine)
    verdict = f"ok ({value:g})" if ok else f"WRONG: got {value:g}, expected {expected:g}"
    say(
        f"rank {rank}/{world} node {info['node']} local {info['local_rank']} on {info['host']} "
        f"({info['device']}): all-reduce {verdict}; {size * 4 / 2**20:g} MiB in {seconds * 1e3:.2f} ms"
    )

    # 5. report: rank 0 collects every rank's result from the store
    dog.enter("report")
    store.set(f"result/{rank}", json.dumps(mine))
    code = 0 if ok else EXIT_FAILED
    if not ok:
        fail(info, "result", f"all-reduce gave {value:g}, expected {expected:g}", wrong=[rank])
    if rank == 0:
        code = max(code, report(store, info, world, args.timeout * 0.9))
    with contextlib.suppress(Exception):  # teardown errors say nothing about the links just measured
        dist.destroy_process_group()
    return code


def wait_for_keys(store: Any, kind: str, world: int, seconds: float) -> list[int]:
    """Wait until ``<kind>/<rank>`` exists for every rank; return the ranks still missing."""
    deadline = time.monotonic() + seconds
    missing = list(range(world))
    while missing:
        missing = [r for r in missing if not store.check([f"{kind}/{r}"])]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return missing


def report(store: Any, info: dict[str, Any], world: int, seconds: float) -> int:
    """Rank 0: the table of every rank's result, the bandwidth figure and the summary marker."""
    missing = wait_for_keys(store, "result", world, seconds)
    results = [json.loads(store.get(f"result/{r}")) for r in range(world) if r not in missing]
    wrong = [r["rank"] for r in results if not r["ok"]]
    slowest = max(results, key=lambda r: r["seconds"])
    nbytes, seconds_each = slowest["bytes"], slowest["seconds"]
    algbw = nbytes / seconds_each / 1e9 if seconds_each > 0 else 0.0
    busbw = algbw * 2 * (world - 1) / world if world > 1 else algbw
    nnodes = info["nnodes"]
    width = max([len(r["host"]) for r in results] + [4])
    lines = [
        f"world size {world}: {nnodes} node(s) x {info['local_world_size']} process(es), backend {info['backend']}, "
        f"master {info['master']}",
        f"  {'rank':>4}  {'node':>4}  {'local':>5}  {'host':<{width}} {'device':<7} all-reduce",
    ]
    for r in results:
        verdict = f"ok ({r['value']:g})" if r["ok"] else f"WRONG ({r['value']:g}, expected {r['expected']:g})"
        lines.append(
            f"  {r['rank']:>4}  {r['node']:>4}  {r['local_rank']:>5}  {r['host']:<{width}} {r['device']:<7} {verdict}"
        )
    for r in missing:
        lines.append(f"  {r:>4}  {'?':>4}  {'?':>5}  {'?':<{width}} {'?':<7} no result within {seconds:g} s")
    lines.append(
        f"bandwidth: all-reduce of {nbytes / 2**20:g} MiB takes {seconds_each * 1e3:.2f} ms "
        f"(slowest rank {slowest['rank']}): algbw {algbw:.2f} GB/s, busbw {busbw:.2f} GB/s"
    )
    for line in lines:
        say(line)
    emit(
        dict(
            info,
            event="summary",
            ok=not wrong and not missing,
            wrong=wrong,
            missing=missing,
            algbw=algbw,
            busbw=busbw,
            bytes=nbytes,
            seconds=seconds_each,
        )
    )
    return 0 if not wrong and not missing else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

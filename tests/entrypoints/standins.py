"""Stand-ins for the pipeline tests: MindSpeed-LLM's entry scripts and torchrun, doing what they do
to the file system, at toy size.

What they model: the real flags, and the files each step leaves behind — convert_ckpt.py writes a
``latest_checkpointed_iteration.txt`` + ``iter_*/mp_rank_*`` tree split as its --target-* sizes (or,
for HF output, a real HF model into ``<save-dir>/mg2hf``: the tiny Qwen3 of the accuracy tests, so
the accuracy step runs for real); preprocess_data.py writes the three packed Megatron index/bin
pairs, one sequence per input record; torchrun + posttrain_gpt.py trains ``--train-iters`` toy
iterations, writes ``lm loss`` scalars into ``--tensorboard-dir`` with TensorBoard's event writer (the
record format Megatron's ``torch.utils.tensorboard`` SummaryWriter writes), saves a checkpoint at
the end or, like ``--exit-signal-handler``, at the current iteration on SIGTERM and exits 0, and
continues from the iteration in ``--load`` when not given ``--finetune``; inference.py answers
the prompts on stdin; evaluation.py prints upstream's ``mmlu acc = C/N=X`` line, counting the rows
of the benchmark CSVs whose answer column is A.

What they do not model: any numerics, NPUs, distributed processes (one process stands for all
ranks), or MindSpeed-LLM's own argument checks.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

CONVERT = textwrap.dedent('''\
    """Stand-in convert_ckpt.py (see tests/entrypoints/standins.py)."""
    import argparse, json, os, shutil
    p = argparse.ArgumentParser()
    for flag in ("--load-model-type", "--save-model-type", "--load-dir", "--save-dir", "--lora-load"):
        p.add_argument(flag)
    p.add_argument("--target-tensor-parallel-size", type=int, default=1)
    p.add_argument("--target-pipeline-parallel-size", type=int, default=1)
    args, _ = p.parse_known_args()
    print(f"standin convert_ckpt: {args.load_model_type} -> {args.save_model_type} from {args.load_dir}"
          f" lora {args.lora_load} into {args.save_dir}", flush=True)
    if args.save_model_type == "hf":
        out = os.path.join(args.save_dir, "mg2hf")
        os.makedirs(out, exist_ok=True)
        source = os.environ["STANDIN_HF_WEIGHTS"]
        for name in os.listdir(source):
            if name == "config.json" or name.endswith(".safetensors") or name == "generation_config.json":
                shutil.copyfile(os.path.join(source, name), os.path.join(out, name))
    else:
        tp, pp = args.target_tensor_parallel_size, args.target_pipeline_parallel_size
        for t in range(tp):
            for r in range(pp):
                rank = f"mp_rank_{t:02d}" if pp == 1 else f"mp_rank_{t:02d}_{r:03d}"
                shard = os.path.join(args.save_dir, "iter_0000001", rank)
                os.makedirs(shard, exist_ok=True)
                with open(os.path.join(shard, "model_optim_rng.pt"), "w") as f:
                    json.dump({"from": args.load_dir, "lora": args.lora_load, "rank": rank}, f)
        with open(os.path.join(args.save_dir, "latest_checkpointed_iteration.txt"), "w") as f:
            f.write("1")
''')

PREPROCESS = textwrap.dedent('''\
    """Stand-in preprocess_data.py (see tests/entrypoints/standins.py)."""
    import argparse, json, os, struct
    p = argparse.ArgumentParser()
    for flag in ("--input", "--output-prefix", "--prompt-type", "--handler-name"):
        p.add_argument(flag)
    args, _ = p.parse_known_args()
    if os.environ.get("STANDIN_FAIL") == "preprocess":
        raise SystemExit("standin preprocess_data: failing as asked (STANDIN_FAIL)")
    with open(args.input, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    print(f"standin preprocess_data: {len(records)} records, prompt type {args.prompt_type}", flush=True)
    sequences = [[1 + len(m["content"]) for m in r["messages"]] for r in records]
    for key in ("input_ids", "attention_mask", "labels"):
        prefix = f"{args.output_prefix}_packed_{key}_document"
        with open(prefix + ".bin", "wb") as f:
            for seq in sequences:
                f.write(struct.pack(f"<{len(seq)}i", *seq))
        sizes, pointers, offset = [], [], 0
        for seq in sequences:
            sizes.append(len(seq)); pointers.append(offset); offset += 4 * len(seq)
        with open(prefix + ".idx", "wb") as f:  # Megatron _IndexWriter: magic, version, dtype int32, counts
            f.write(b"MMIDIDX\\x00\\x00" + struct.pack("<QBQQ", 1, 4, len(sizes), len(sizes) + 1))
            f.write(struct.pack(f"<{len(sizes)}i", *sizes))
            f.write(struct.pack(f"<{len(pointers)}q", *pointers))
            f.write(struct.pack(f"<{len(sizes) + 1}q", *range(len(sizes) + 1)))
''')

TORCHRUN = textwrap.dedent('''\
    #!{python}
    """Stand-in torchrun plus MindSpeed-LLM's torchrun entry scripts (see tests/entrypoints/standins.py)."""
    import json, math, os, signal, sys
    argv = sys.argv[1:]
    at = next(i for i, token in enumerate(argv) if token.endswith(".py"))
    entry, args = argv[at], argv[at + 1:]

    def values(flag):
        if flag not in args:
            return None
        out = []
        for token in args[args.index(flag) + 1:]:
            if token.startswith("--"):
                break
            out.append(token)
        return out

    def value(flag, default=None):
        found = values(flag)
        return found[0] if found else default

    def save_checkpoint(save, iteration):
        tp, pp = int(value("--tensor-model-parallel-size", 1)), int(value("--pipeline-model-parallel-size", 1))
        for t in range(tp):
            for r in range(pp):
                rank = f"mp_rank_{{t:02d}}" if pp == 1 else f"mp_rank_{{t:02d}}_{{r:03d}}"
                shard = os.path.join(save, f"iter_{{iteration:07d}}", rank)
                os.makedirs(shard, exist_ok=True)
                with open(os.path.join(shard, "model_optim_rng.pt"), "w") as f:
                    json.dump({{"iteration": iteration, "data": value("--data-path")}}, f)
        with open(os.path.join(save, "latest_checkpointed_iteration.txt"), "w") as f:
            f.write(str(iteration))

    def train():
        signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGTERM}})  # taken with sigwait/sigpending: no race
        save, load, iters = value("--save"), value("--load"), int(value("--train-iters"))
        finetune = "--finetune" in args
        start = 0
        if load and not finetune:
            with open(os.path.join(load, "latest_checkpointed_iteration.txt")) as f:
                start = int(f.read().strip())
        print(f"standin {{entry}}: load {{load}} lora-load {{value('--lora-load')}} finetune {{finetune}} "
              f"from iteration {{start}} to {{iters}}", flush=True)
        writer = None
        if value("--tensorboard-dir"):
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
            writer = EventFileWriter(value("--tensorboard-dir"))
        hold = int(os.environ.get("STANDIN_HOLD_AT", "0"))
        for iteration in range(start + 1, iters + 1):
            wobble = 0.04 * math.sin(iteration * 0.9) * math.exp(-iteration / 600.0)
            loss = 0.42 + 2.6 * math.exp(-iteration / 160.0) + wobble
            if writer:
                summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="lm loss", simple_value=loss)])
                writer.add_event(event_pb2.Event(step=iteration, summary=summary, wall_time=__import__("time").time()))
                writer.flush()
            print(f" iteration {{iteration:>6}}/{{iters}} | lm loss: {{loss:.6E}} |", flush=True)
            stop = False
            if iteration == hold:
                print(f"standin: holding at iteration {{iteration}} until SIGTERM", flush=True)
                signal.sigwait({{signal.SIGTERM}})
                stop = True
            elif signal.SIGTERM in signal.sigpending():
                signal.sigwait({{signal.SIGTERM}})
                stop = True
            if stop:
                save_checkpoint(save, iteration)
                print(f"standin: SIGTERM, saved a checkpoint at iteration {{iteration}}, exiting", flush=True)
                return 0
        save_checkpoint(save, iters)
        if writer:
            writer.close()
        return 0

    def infer():
        for line in sys.stdin:
            if line.strip() == "quit":
                break
            print(f"standin inference: answer to {{line.strip()}}", flush=True)
        return 0

    def evaluate():
        import csv
        data = value("--task-data-path")
        correct = total = 0
        for name in sorted(os.listdir(data)):
            with open(os.path.join(data, name), newline="") as f:
                for row in csv.reader(f):
                    total += 1
                    correct += row[-1] == "A"
        print(f"{{value('--task')}} acc = {{correct}}/{{total}}={{correct / total}}", flush=True)
        return 0

    runs = {{"posttrain_gpt.py": train, "pretrain_gpt.py": train, "inference.py": infer, "evaluation.py": evaluate}}
    sys.exit(runs[entry]())
''')

DOCKER = textwrap.dedent('''\
    #!{python}
    """Stand-in docker CLI: `docker run [options] IMAGE COMMAND...` runs `ascend-llm COMMAND...` here with
    the -e variables, as the image's ENTRYPOINT ["ascend-llm"] would; each call is logged as JSON."""
    import json, os, sys
    argv = sys.argv[1:]
    valued = {{"--name", "--runtime", "-e", "--device", "-v", "--network", "--shm-size", "--ipc", "--stop-timeout"}}
    env, i = dict(os.environ), 1
    while i < len(argv) and argv[i].startswith("-"):
        if argv[i] == "-e":
            name, _, value = argv[i + 1].partition("=")
            env[name] = value
        i += 2 if argv[i] in valued else 1
    with open(os.environ["STANDIN_DOCKER_LOG"], "a") as log:
        log.write(json.dumps(argv) + "\\n")
    os.execve(sys.executable, [sys.executable, "-m", "ascend_llm", *argv[i + 1 :]], env)
''')

SITECUSTOMIZE = textwrap.dedent('''\
    """Stand-in for a roomy volume in the stage processes a pipeline test starts: shutil.disk_usage
    reports 100 TB free (the checkpoint-size rules have their own tests; the machine has less)."""
    import shutil
    _usage = shutil.disk_usage
    shutil.disk_usage = lambda path: _usage(path)._replace(free=100 * 1024**4)
''')


def install(home: Path, bin_dir: Path, hf_weights: Path) -> dict[str, str]:
    """Write the stand-ins; return the environment variables that put them in use."""
    (home / "convert_ckpt.py").write_text(CONVERT)
    (home / "preprocess_data.py").write_text(PREPROCESS)
    for name in ("posttrain_gpt.py", "pretrain_gpt.py", "inference.py", "evaluation.py"):
        (home / name).write_text("# stand-in: the torchrun stand-in runs this entry\n")
    (home / "megatron").mkdir(exist_ok=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    torchrun = bin_dir / "torchrun"
    torchrun.write_text(TORCHRUN.format(python=sys.executable))
    torchrun.chmod(0o755)
    docker = bin_dir / "docker"
    docker.write_text(DOCKER.format(python=sys.executable))
    docker.chmod(0o755)
    python3 = bin_dir / "python3"  # the entry scripts run with `python3`: this interpreter
    python3.symlink_to(sys.executable)
    site = bin_dir.parent / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "STANDIN_HF_WEIGHTS": str(hf_weights),
        "PYTHONPATH_PREFIX": str(site),
    }

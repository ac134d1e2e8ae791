"""``evaluate --task accuracy``: exact-match accuracy of a fine-tuned model on a business data set.

The seed's section 7 scores an intent-classification set: each line is OpenAI-style
``{"messages": [...]}`` and the last assistant turn is the expected answer. We generate greedily
from the other turns with HuggingFace transformers (on an NPU when torch_npu sees one, else on the
CPU), strip Qwen3's ``<think>...</think>``, normalise whitespace, and compare exactly. The report
has per-label counts (label = the expected answer) and every sample's prediction.

Run through ``ascend-llm evaluate --task accuracy``; torch and transformers are imported only here.
SIGINT/SIGTERM stop it between two samples: the report then holds the samples done so far and says
``"partial": true``, and the exit status is 128 + the signal.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ascend_llm.errors import AscendLLMError, Stopped
from ascend_llm.script import printable

THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
ROLES = {"system", "user", "assistant", "tool"}


class DataError(AscendLLMError):
    """The data set is not what --task accuracy reads."""


@dataclass
class Sample:
    """One question: the prompt turns and the expected answer (normalised)."""

    index: int
    line: int
    messages: list[dict[str, str]]
    expected: str


def normalise(text: str) -> str:
    """Drop ``<think>...</think>`` (and an unfinished ``<think>`` tail), collapse whitespace."""
    text = THINK.sub(" ", text)
    if "<think>" in text:
        text = text.split("<think>", 1)[0]
    return " ".join(text.split())


def load_samples(path: Path, limit: int | None = None) -> list[Sample]:
    """Read and validate the .jsonl; each problem is one line naming the line number."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = list(handle)
    except OSError as exc:
        raise DataError(f"--data {path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(f"--data {path}: not UTF-8 text") from None
    samples: list[Sample] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        messages = _messages(raw, f"--data {path} line {number}")
        samples.append(Sample(len(samples), number, messages[:-1], normalise(messages[-1]["content"])))
        if limit and len(samples) >= limit:
            break
    if not samples:
        raise DataError(f"--data {path}: no samples")
    return samples


def _messages(raw: str, where: str) -> list[dict[str, str]]:
    """The messages of one line, checked: roles, string contents, an assistant turn last."""
    try:
        record = json.loads(raw)
    except ValueError as exc:
        raise DataError(f"{where}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        raise DataError(f'{where}: expected {{"messages": [{{"role": ..., "content": ...}}, ...]}}')
    for message in messages:
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise DataError(f"{where}: every message needs a role ({', '.join(sorted(ROLES))}) and a string content")
    if messages[-1]["role"] != "assistant":
        raise DataError(
            f"{where}: the last message is {messages[-1]['role']!r}; the last turn must be "
            f"the assistant's expected answer"
        )
    if len(messages) < 2:
        raise DataError(f"{where}: needs at least one turn before the expected answer")
    return messages


def score(samples: Sequence[Sample], predictions: Sequence[str]) -> dict[str, Any]:
    """Exact match on normalised text; overall and per label."""
    per_label: dict[str, dict[str, Any]] = {}
    rows = []
    correct = 0
    for sample, prediction in zip(samples, predictions):
        predicted = normalise(prediction)
        hit = predicted == sample.expected
        correct += hit
        bucket = per_label.setdefault(sample.expected, {"total": 0, "correct": 0})
        bucket["total"] += 1
        bucket["correct"] += hit
        rows.append(
            {
                "index": sample.index,
                "line": sample.line,
                "expected": sample.expected,
                "predicted": predicted,
                "raw": prediction,
                "correct": hit,
            }
        )
    for bucket in per_label.values():
        bucket["accuracy"] = bucket["correct"] / bucket["total"]
    total = len(rows)
    return {
        "total": total,
        "correct": correct,
        "accuracy": correct / total if total else 0.0,
        "per_label": dict(sorted(per_label.items())),
        "samples": rows,
    }


def pick_device(requested: str) -> str:
    """npu when torch_npu is importable and sees a device, else cpu (or fail if npu was demanded)."""
    if requested == "cpu":
        return "cpu"
    try:
        import torch
        import torch_npu  # noqa: F401  (registers the npu device)

        if torch.npu.is_available():
            return "npu"
    except Exception as exc:  # torch_npu raises assorted errors without CANN/driver
        if requested == "npu":
            raise AscendLLMError(f"--device npu: torch_npu is unusable here ({str(exc).splitlines()[0]})") from None
    if requested == "npu":
        raise AscendLLMError("--device npu: torch_npu sees no NPU; pass the devices or use --device cpu")
    return "cpu"


def generate(
    model_dir: str,
    tokenizer_dir: str,
    samples: Sequence[Sample],
    max_new_tokens: int,
    device: str,
    enable_thinking: bool | None = None,
    progress=None,
    answers: list[str] | None = None,
) -> list[str]:
    """Greedy answers, one sample at a time (padding-free, so results do not depend on batching);
    appended to ``answers`` as they come, so a stopped run keeps the ones done."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        raise AscendLLMError(
            f"the tokenizer in {tokenizer_dir} has no chat template; pass --tokenizer with the original HF model dir"
        )
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype="auto", local_files_only=True)
    model.to(device)
    model.eval()
    eos = model.generation_config.eos_token_id if model.generation_config else None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if isinstance(eos, list) else eos)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=eos if eos is not None else tokenizer.eos_token_id,
        pad_token_id=pad,
    )
    template_kwargs = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    answers = [] if answers is None else answers
    for sample in samples:
        text = tokenizer.apply_chat_template(
            sample.messages, tokenize=False, add_generation_prompt=True, **template_kwargs
        )
        encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        input_ids = encoded["input_ids"].to(device)
        mask = encoded.get("attention_mask")
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids, attention_mask=None if mask is None else mask.to(device), generation_config=config
            )
        new_tokens = output[0, input_ids.shape[1] :]
        answers.append(tokenizer.decode(new_tokens, skip_special_tokens=True))
        if progress:
            progress(len(answers), len(samples))
    return answers


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write atomically (a private temp file, then a rename), so a stopped run never leaves half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # backslashreplace: a path holding bytes that are not UTF-8 (lone surrogates) becomes a JSON \\u escape
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as handle:
            handle.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the child process ``evaluate --task accuracy`` launches (a report, or one error line)."""
    parser = argparse.ArgumentParser(
        prog="python -m ascend_llm.accuracy",
        description="Exact-match accuracy (run via ascend-llm evaluate --task accuracy).",
    )
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--tokenizer")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--device", choices=("auto", "npu", "cpu"), default="auto")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--enable-thinking", choices=("true", "false"))
    args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # a path holding bytes that are not UTF-8 is printed, not a traceback
        sys.stdout.reconfigure(errors="surrogateescape")
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)
    answers: list[str] = []
    samples: list[Sample] = []
    started = time.time()
    device = args.device

    def report_of(done: int) -> dict[str, Any]:
        return {
            "model": args.model_dir,
            "data": str(args.data),
            "device": device,
            "max_new_tokens": args.max_new_tokens,
            "seconds": round(time.time() - started, 2),
            "normalisation": "strip <think>...</think>, collapse whitespace, exact match",
            "partial": done < len(samples),
            "planned": len(samples),
            **score(samples[:done], answers[:done]),
        }

    try:
        if args.output.is_dir():
            raise AscendLLMError(f"--output {args.output}: expected a file, found a directory")
        samples = load_samples(args.data, args.limit)
        device = pick_device(args.device)
        print(f"accuracy: {len(samples)} samples, model {args.model_dir}, device {device}", flush=True)
        step = max(1, len(samples) // 20)

        def progress(done: int, total: int) -> None:
            if done == 1 or done % step == 0 or done == total:  # the first line says generation is under way
                print(f"accuracy: generated {done}/{total}", flush=True)

        thinking = None if args.enable_thinking is None else args.enable_thinking == "true"
        generate(
            args.model_dir, args.tokenizer or args.model_dir, samples, args.max_new_tokens, device, thinking, progress,
            answers,
        )  # fmt: skip
        report = report_of(len(answers))
        write_report(args.output, report)
    except AscendLLMError as exc:
        for line in exc.lines:
            print(f"ascend-llm: {line}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, Stopped) as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the report short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
        name = signal.Signals(signum).name
        done = len(answers)
        if done:
            write_report(args.output, report_of(done))
            print(f"accuracy: stopped by {name} after {done}/{len(samples)} samples; "
                  f"partial report (\"partial\": true) written to {args.output}", flush=True)  # fmt: skip
        else:
            print(f"accuracy: stopped by {name} before any sample was done; no report written", flush=True)
        return 128 + signum
    print(f"accuracy: {report['correct']}/{report['total']} = {report['accuracy']:.4f}")
    for label, bucket in report["per_label"].items():
        print(f"accuracy:   {bucket['correct']}/{bucket['total']}  {printable(label[:60])}")
    print(f"accuracy: report written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""evaluate --task accuracy end to end on the CPU, with a tiny Qwen3 and tokenizer made here.

The expected answers are the model's own greedy outputs, computed by a hand-written argmax loop
(not by transformers' generate, which the stage uses), so a data set of them must score 1.0, and
the same set with half its labels changed must score 0.5.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from ascend_llm import accuracy
from ascend_llm.accuracy import DataError, load_samples, normalise, score

WORDS = [
    "hello",
    "world",
    "the",
    "a",
    "is",
    "what",
    "which",
    "color",
    "sky",
    "blue",
    "red",
    "green",
    "yes",
    "no",
    "cat",
    "dog",
    "runs",
    "sits",
    "on",
    "mat",
    "how",
    "many",
    "legs",
    "two",
    "four",
    "intent",
    "order",
    "cancel",
    "refund",
    "query",
    "weather",
    "today",
    "tomorrow",
    "please",
    "thanks",
    "ok",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "[UNK]"]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QUESTIONS = [
    "what color is the sky",
    "how many legs cat",
    "cancel order please",
    "weather today",
    "which dog runs",
    "refund query please",
    "is the mat red",
    "hello world",
]
NEW_TOKENS = 5


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Qwen3 (hidden 32) with random weights and a word-level tokenizer, saved as HF files."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    directory = tmp_path_factory.mktemp("tiny-qwen3")
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS + ["user", "assistant", "system"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="[UNK]"
    )
    fast.chat_template = CHATML
    fast.save_pretrained(directory)
    config = Qwen3Config(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        initializer_range=0.5,
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|endoftext|>"],
        bos_token_id=None,
    )
    torch.manual_seed(1234)
    Qwen3ForCausalLM(config).save_pretrained(directory)
    return directory


def greedy_by_hand(model_dir: Path, conversations: list[list[dict]]) -> list[str]:
    """Independent greedy decoding: argmax of the last logits, one token at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    answers = []
    for messages in conversations:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        new: list[int] = []
        with torch.no_grad():
            for _ in range(NEW_TOKENS):
                sequence = torch.cat([ids, torch.tensor([new], dtype=ids.dtype)], dim=1) if new else ids
                next_id = int(model(sequence).logits[0, -1].argmax())
                if next_id == tokenizer.eos_token_id:
                    break
                new.append(next_id)
        answers.append(tokenizer.decode(new, skip_special_tokens=True))
    return answers


@pytest.fixture(scope="module")
def own_answers(tiny_model: Path) -> list[str]:
    return greedy_by_hand(
        tiny_model, [[{"role": "system", "content": "answer"}, {"role": "user", "content": q}] for q in QUESTIONS]
    )


def write_set(path: Path, answers: list[str]) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for question, answer in zip(QUESTIONS, answers, strict=False):
            record = {
                "messages": [
                    {"role": "system", "content": "answer"},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
            handle.write(json.dumps(record) + "\n")
    return path


@pytest.fixture
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage runs `python -m ascend_llm.accuracy` in a child process: make the package importable."""
    src = str(Path(accuracy.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", src + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_accuracy(ascend, model: Path, data: Path, report: Path):
    result = ascend(
        "evaluate",
        "--task",
        "accuracy",
        "--load",
        model,
        "--data",
        data,
        "--output",
        report,
        "--max-new-tokens",
        NEW_TOKENS,
        "--device",
        "cpu",
    )
    assert result.code == 0, result.err
    return json.loads(report.read_text())


def test_own_greedy_answers_score_one_and_half_changed_score_half(
    ascend, tiny_model, own_answers, tmp_path, importable
) -> None:
    assert len(set(own_answers)) > 1, "the tiny model should not answer everything the same way"
    # the stage must see through thinking blocks and whitespace differences in the expected answers
    decorated = [
        f"<think>\nlet me think\n</think>\n\n  {a.replace(' ', '   ')} \n" if i % 2 else a
        for i, a in enumerate(own_answers)
    ]
    report = run_accuracy(ascend, tiny_model, write_set(tmp_path / "own.jsonl", decorated), tmp_path / "r1.json")
    assert (report["total"], report["correct"], report["accuracy"]) == (8, 8, 1.0)
    assert report["device"] == "cpu"
    assert sum(b["total"] for b in report["per_label"].values()) == 8
    assert all(b["accuracy"] == 1.0 for b in report["per_label"].values())

    changed = [f"label {i} changed" if i % 2 == 0 else a for i, a in enumerate(own_answers)]
    report = run_accuracy(ascend, tiny_model, write_set(tmp_path / "half.jsonl", changed), tmp_path / "r2.json")
    assert (report["total"], report["correct"], report["accuracy"]) == (8, 4, 0.5)
    for i in range(0, 8, 2):
        bucket = report["per_label"][f"label {i} changed"]
        assert (bucket["total"], bucket["correct"]) == (1, 0)
    wrong = [row for row in report["samples"] if not row["correct"]]
    assert [row["line"] for row in wrong] == [1, 3, 5, 7]
    assert [row["predicted"] for row in wrong] == [normalise(own_answers[i]) for i in range(0, 8, 2)]


def test_accuracy_dry_run_and_default_tokenizer(ascend, tiny_model, tmp_path) -> None:
    mg2hf = tmp_path / "hf" / "mg2hf"
    mg2hf.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (mg2hf / name).write_bytes((tiny_model / name).read_bytes())
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "hf" / name).write_bytes((tiny_model / name).read_bytes())
    data = write_set(tmp_path / "d.jsonl", ["yes"] * 8)
    result = ascend("evaluate", "--task", "accuracy", "--load", mg2hf, "--data", data, "--dry-run")
    assert result.code == 0, result.err
    assert f"--tokenizer {tmp_path / 'hf'} " in result.out.replace("\\\n", " "), (
        "convert's mg2hf/ has no tokenizer: the parent (the original HF dir) provides it"
    )
    assert f"--output {mg2hf / 'logs' / 'accuracy-d.json'}" in result.out


# -- units ------------------------------------------------------------------------------------------
def test_normalise_strips_thinking_and_whitespace() -> None:
    assert normalise("<think>\nhmm\n</think>\n\n  order   cancel \n") == "order cancel"
    assert normalise("a<think>x</think>b<think>y</think> c") == "a b c"
    assert normalise("answer <think> unfinished thoughts") == "answer"
    assert normalise("") == ""


def test_score_counts_per_label(tmp_path: Path) -> None:
    data = tmp_path / "s.jsonl"
    rows = [("q1", "refund"), ("q2", "refund"), ("q3", "order")]
    data.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
            for q, a in rows
        )
    )
    report = score(load_samples(data), ["refund", "order", "order"])
    assert report["accuracy"] == pytest.approx(2 / 3)
    assert report["per_label"] == {
        "order": {"total": 1, "correct": 1, "accuracy": 1.0},
        "refund": {"total": 2, "correct": 1, "accuracy": 0.5},
    }


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("not json", "not valid JSON"),
        ('{"conversations": []}', 'expected {"messages"'),
        ('{"messages": [{"role": "user", "content": "q"}]}', "the last turn must be the assistant"),
        ('{"messages": [{"role": "assistant", "content": "a"}]}', "needs at least one turn"),
        ('{"messages": [{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}]}', "needs a role"),
    ],
)
def test_bad_data_is_one_line_with_its_line_number(tmp_path: Path, line: str, needle: str) -> None:
    data = tmp_path / "bad.jsonl"
    good = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    data.write_text(f"{good}\n\n{line}\n")
    with pytest.raises(DataError) as err:
        load_samples(data)
    assert "line 3" in err.value.lines[0] and needle in err.value.lines[0]


def test_bad_data_stops_the_stage_before_loading_a_model(ascend, tiny_model, tmp_path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    result = ascend("evaluate", "--task", "accuracy", "--load", tiny_model, "--data", data)
    assert result.code == 2 and "line 1" in result.err and "Traceback" not in result.err


def test_npu_demanded_without_torch_npu_is_one_line() -> None:
    with pytest.raises(accuracy.AscendLLMError) as err:
        accuracy.pick_device("npu")
    assert "--device npu" in err.value.lines[0]
    assert accuracy.pick_device("auto") == "cpu"


def test_report_is_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "out" / "r.json"
    accuracy.write_report(target, {"accuracy": 1.0})
    assert json.loads(target.read_text()) == {"accuracy": 1.0}
    assert not list(target.parent.glob("*.tmp"))


def test_ctrl_c_keeps_the_report_of_the_samples_done(tiny_model, tmp_path, script_env) -> None:
    """SIGINT to a running `evaluate --task accuracy` (a real subprocess): once it says it generated the first
    sample it is stopped; it ends with 130 and one line, and the report holds the samples done, marked partial."""
    import signal
    import subprocess
    import sys

    data = tmp_path / "big.jsonl"
    many = [QUESTIONS[i % len(QUESTIONS)] for i in range(4000)]  # far more than can finish before the signal
    with open(data, "w", encoding="utf-8") as handle:
        for question in many:
            turns = [{"role": "user", "content": question}, {"role": "assistant", "content": "yes"}]
            handle.write(json.dumps({"messages": turns}) + "\n")
    report = tmp_path / "out" / "report.json"
    argv = ["evaluate", "--task", "accuracy", "--load", tiny_model, "--data", data, "--output", report,
            "--max-new-tokens", NEW_TOKENS, "--device", "cpu", "--log-dir", tmp_path / "logs"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "ascend_llm", *map(str, argv)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=script_env, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("accuracy: generated 1/4000"):
                break
        assert seen and seen[-1].startswith("accuracy: generated 1/"), (seen, proc.wait(), proc.stderr.read())
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
        out, err = proc.communicate()
    finally:
        proc.kill()
    assert code == 130, (code, out, err)
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    assert err.splitlines()[-1].startswith("ascend-llm: evaluate accuracy stopped by SIGINT (exit status 130)"), err
    assert sum("stopped by" in line for line in err.splitlines()) == 1
    assert "partial report" in out and str(report) in out
    written = json.loads(report.read_text())
    assert written["partial"] is True and written["planned"] == 4000
    assert 1 <= written["total"] == len(written["samples"]) < 4000
    assert [row["line"] for row in written["samples"]] == list(range(1, written["total"] + 1))
    assert sorted(p.name for p in report.parent.iterdir()) == ["report.json"], "no temporary file is left"


def test_a_newline_in_the_report_name_cannot_start_a_command(ascend, tiny_model, own_answers, tmp_path, importable):
    """The issue's second reproduction, through a real run: --output with a newline and a command in it."""
    pwned = tmp_path / "PWNED"
    report = Path(f"{tmp_path}/r\ntouch {pwned}\n.json")
    written = run_accuracy(ascend, tiny_model, write_set(tmp_path / "d.jsonl", own_answers), report)
    assert written["total"] == 8 and written["partial"] is False
    assert not pwned.exists()

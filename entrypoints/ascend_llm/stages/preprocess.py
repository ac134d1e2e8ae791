"""``ascend-llm preprocess``: tokenise a data set into Megatron .bin/.idx with preprocess_data.py."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from ascend_llm import datafiles, preflight
from ascend_llm.errors import UsageError
from ascend_llm.options import Option, common, opt, positive_int
from ascend_llm.script import Arg, LaunchScript
from ascend_llm.stages.base import Stage, StageRequest, base_script, merge_extra, python

HANDLERS = {
    "pretrain": "GeneralPretrainHandler",
    "alpaca": "AlpacaStyleInstructionHandler",
    "sharegpt": "SharegptStyleInstructionHandler",
    "openai": "SharegptStyleInstructionHandler",
}
OPENAI_MAP_KEYS = {
    "messages": "messages",
    "tags": {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
    },
}
SNIFF_LIMIT = 64 * 1024 * 1024
# What preprocess_data.py loads (MindSpeed-LLM's _get_data_format: file suffix -> datasets loader)
SUFFIXES = ("jsonl", "json", "parquet", "csv", "txt", "arrow")
# The --map-keys fields each handler reads (MindSpeed-LLM's get_handler_dataset_attr); values name columns
MAP_FIELDS = {
    "alpaca": ("prompt", "query", "response", "history", "system", "chosen", "rejected"),
    "sharegpt": ("messages", "tags", "system", "tools", "chosen", "rejected", "kto_tag"),
}
TAG_FIELDS = ("role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag")
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class PreprocessStage(Stage):
    """preprocess_data.py with the handler, map-keys and prompt type each data format needs."""

    name = "preprocess"
    summary = "Tokenise a data set into Megatron .bin/.idx files (pretrain, alpaca, sharegpt, openai)."
    description = """\
--format pretrain  {"text": ...} records -> <prefix>_text_document.{bin,idx}; pretrain takes
                   --data <prefix>_text_document.
--format alpaca    instruction/input/output records -> <prefix>_packed_{input_ids,attention_mask,
                   labels}_document.{bin,idx}; sft/lora take --data <prefix>.
--format sharegpt  "conversations" with from/value (human/gpt) -> the same packed files.
--format openai    "messages" with role/content (user/assistant/system), as in the seed's business
                   data -> the same packed files (ShareGPT handler with the OpenAI --map-keys).
The output prefix's directory is created. Pass the bare prefix; preprocessing appends the suffixes."""

    def options(self) -> list[Option]:
        return [
            opt(
                "format",
                help="input layout",
                choices=tuple(HANDLERS),
                metavar="{pretrain,alpaca,sharegpt,openai}",
                default_text="required",
            ),
            opt(
                "input",
                help="a .jsonl/.json/.parquet/.csv/.txt/.arrow file or a directory of one format",
                metavar="PATH",
                default_text="required",
            ),
            opt(
                "output_prefix",
                help="output prefix, e.g. /data/alpaca/alpaca (no suffix)",
                metavar="PREFIX",
                default_text="required",
            ),
            *common("tokenizer", "model", required=("tokenizer",), model="model preset (optional here)"),
            opt(
                "prompt_type",
                help="chat template of alpaca/sharegpt/openai data",
                default_text="the release's Qwen3 template: qwen on MindSpeed-LLM 2.1.0, qwen3 from 2.2.0",
                metavar="NAME",
            ),
            opt(
                "map_keys",
                help="JSON column mapping passed as --map-keys",
                default_text="the OpenAI mapping for --format openai, else upstream's",
                metavar="JSON",
            ),
            opt("json_keys", help="pretrain: JSON keys holding the text", nargs="+", default=["text"], metavar="KEY"),
            opt("workers", help="tokeniser processes", type=positive_int, default=4, metavar="N"),
            opt("log_interval", help="progress line every N records", type=positive_int, default=1000, metavar="N"),
            opt("pack", help="pack several samples per sequence (needs --seq-length)", action="store_true"),
            opt("seq_length", help="sequence length for --pack", type=positive_int, metavar="N"),
            opt(
                "enable_thinking",
                help="Qwen3 thinking in the template of instruction data: true trains on the empty "
                "<think></think> of answers without one, false strips thoughts, none is upstream's default "
                "(MindSpeed-LLM 2.2.0 and later)",
                choices=("true", "false", "none"),
                metavar="{true,false,none}",
                default_text="true from 2.2.0, as upstream's Qwen3 instruction example",
            ),
            *common("config", "dry_run", "no_preflight", "log_dir", "env", "release"),
        ]

    def needs_model(self, action: str | None) -> bool:
        return False

    def preset_stage(self, action: str | None) -> str | None:
        return None

    def validate(self, req: StageRequest) -> None:
        """Options that only make sense for some formats, and the 2.2.0-only --enable-thinking."""
        self.require(req, "format", "input", "output_prefix", "tokenizer")
        fmt = req.opts["format"]
        if fmt == "pretrain":
            self.forbid(
                req, ("prompt_type", "map_keys", "pack", "enable_thinking"), "pretraining data has no chat template"
            )
        elif "json_keys" in req.explicit:
            raise UsageError("--json-keys is for --format pretrain; instruction data uses --map-keys")
        if req.opts.get("pack") and not req.opts.get("seq_length"):
            raise UsageError("--pack needs --seq-length (the packed sequence length)")
        unsupported = self.command(req).unsupported
        if req.opts.get("enable_thinking") not in (None, "none") and "enable_thinking" in unsupported:
            raise UsageError(unsupported["enable_thinking"])
        if req.opts.get("map_keys"):
            req.state["map_keys"] = parse_map_keys(req.opts["map_keys"], fmt)
        if not req.opts.get("log_dir"):
            req.opts["log_dir"] = str(Path(req.opts["output_prefix"]).parent / "logs")

    def map_keys(self, req: StageRequest) -> str | None:
        if req.opts.get("map_keys"):
            return req.opts["map_keys"]
        if req.opts["format"] == "openai":
            return json.dumps(OPENAI_MAP_KEYS, separators=(",", ":"))
        return None

    def prompt_type(self, req: StageRequest) -> str | None:
        if req.opts["format"] == "pretrain":
            return None
        return req.opts.get("prompt_type") or (req.release.qwen3_prompt_type if req.release else "qwen")

    def enable_thinking(self, req: StageRequest) -> str | None:
        """--enable-thinking, else the release's default for instruction data (none: not passed)."""
        if req.opts["format"] == "pretrain":
            return None
        value = req.opts.get("enable_thinking") or (req.release.enable_thinking if req.release else None)
        return None if value in (None, "none") else value

    def preflight(self, req: StageRequest) -> list[str]:
        """Input exists and looks like --format says; tokenizer; a bare, writable output prefix."""
        o = req.opts
        problems: list[str] = []
        source = o["input"]
        if not os.path.exists(source):
            raw = req.raw.get("input") or ""
            if HUB_NAME.match(raw):
                req.notes.append(f"note: {raw} is not a local path; preprocess_data.py will try the HF hub")
                o["input"] = raw
            else:
                problems += preflight.expect(source, "--input", "file or directory", "pass the data set file or folder")
        else:
            files, problem = data_files(source)  # no files and no problem: a loading script upstream runs
            problems += [problem] if problem else []
            if files and "map_keys" in req.state:
                problems += map_keys_problems(files[0], req.state["map_keys"])
            elif files:
                problems += sniff(files[0], o["format"], o["json_keys"])
        problems += preflight.tokenizer_dir(o["tokenizer"])
        prefix_problem = datafiles.output_prefix_problem(o["output_prefix"], o["format"])
        if prefix_problem:
            problems.append(prefix_problem)
        problems += preflight.writable_dir(str(Path(o["output_prefix"]).parent), "--output-prefix")
        problems += preflight.writable_dir(o.get("log_dir"), "--log-dir")
        if req.preset:
            problems += preflight.transformers_knows(req.preset.hf_model_type, "preprocess")
        if not req.dry_run:
            problems += preflight.entry_script(self.command(req).entry)
        return problems

    def compose(self, req: StageRequest) -> LaunchScript:
        """Upstream's data_convert_qwen3_*.sh command; the output directory is created first."""
        o = req.opts
        fmt = o["format"]
        args = [
            Arg("--input", (o["input"],)),
            Arg("--tokenizer-name-or-path", (o["tokenizer"],)),
            Arg("--tokenizer-type", ("PretrainedFromHF",)),
            Arg("--handler-name", (HANDLERS[fmt],)),
            Arg("--output-prefix", (o["output_prefix"],)),
        ]
        if fmt == "pretrain":
            args.append(Arg("--json-keys", tuple(o["json_keys"])))
        args += [Arg("--workers", (str(o["workers"]),)), Arg("--log-interval", (str(o["log_interval"]),))]
        prompt_type = self.prompt_type(req)
        if prompt_type:
            args.append(Arg("--prompt-type", (prompt_type,)))
        map_keys = self.map_keys(req)
        if map_keys:
            args.append(Arg("--map-keys", (map_keys,)))
        if o.get("pack"):
            args += [Arg("--pack"), Arg("--seq-length", (str(o["seq_length"]),))]
        thinking = self.enable_thinking(req)
        if thinking:
            args.append(Arg("--enable-thinking", (thinking,)))
        out = o["output_prefix"]
        result = f"{out}_text_document" if fmt == "pretrain" else f"{out}_packed_*_document"
        command = self.command(req)
        script = base_script(req, f"writes {result}.{{bin,idx}}", [python()], distributed=False, entry=command.entry)
        script.args = merge_extra(command.apply(args, o), req.extra)
        script.make_dirs.append(str(Path(out).parent))
        use = f"--data {out}_text_document" if fmt == "pretrain" else f"--data {out}"
        script.notes.append(f"then train with {use}")
        return script


EXPECTED_KEYS: dict[str, Any] = {
    "pretrain": ("text",),
    "alpaca": ("instruction", "output"),
    "sharegpt": ("conversations",),
    "openai": ("messages",),
}


def first_record(path: str) -> dict[str, Any] | None:
    """The first JSON record of a .jsonl/.json file (None for other formats or huge .json)."""
    if path.endswith(".jsonl"):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.strip():
                    value = json.loads(line)
                    return value if isinstance(value, dict) else None
        return None
    if path.endswith(".json") and os.path.getsize(path) <= SNIFF_LIMIT:
        with open(path, encoding="utf-8", errors="replace") as handle:
            value = json.load(handle)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            return value[0]
        return value if isinstance(value, dict) else None
    return None


def guess_format(record: dict[str, Any]) -> str | None:
    for fmt in ("openai", "sharegpt", "alpaca", "pretrain"):
        if all(k in record for k in EXPECTED_KEYS[fmt]):
            return fmt
    return None


def data_files(source: str) -> tuple[list[str], str | None]:
    """The files preprocess_data.py would load from ``source`` (a file, or a folder of one format),
    or the one-line reason it cannot: an unsupported suffix, nothing to read, formats mixed."""
    hint = f"preprocessing reads {', '.join('.' + x for x in SUFFIXES)}"
    script = source if os.path.isfile(source) else os.path.join(source, os.path.basename(source) + ".py")
    if script.endswith(".py") and os.path.isfile(script):
        return [], None  # a datasets loading script: upstream runs it, there is nothing to check here
    if os.path.isfile(source):
        files = [source]
        if source.rsplit(".", 1)[-1] not in SUFFIXES:
            return [], f"--input {source}: unsupported file type; {hint}"
    else:
        try:
            names = sorted(n for n in os.listdir(source) if not n.startswith("."))
        except OSError as exc:
            return [], f"--input {source}: cannot read the folder ({exc.strerror})"
        files = [os.path.join(source, n) for n in names if n.rsplit(".", 1)[-1] in SUFFIXES]
        kinds = sorted({f.rsplit(".", 1)[-1] for f in files})
        if not files:
            return [], f"--input {source}: the folder holds no data file; {hint}"
        if len(kinds) > 1:
            return [], (
                f"--input {source}: the folder mixes {', '.join('.' + k for k in kinds)} files; preprocessing would "
                f"read only one kind: keep one format per folder, or pass one file"
            )
    for file in files:
        if not os.path.isfile(file):
            return [], f"--input {file}: expected a file, found {preflight.found(file)}"
        if os.path.getsize(file) == 0 or (file.endswith((".jsonl", ".json", ".csv", ".txt")) and _blank(file)):
            return [], f"--input {file} is empty; pass the data set file"
    return files, None


def _blank(path: str) -> bool:
    """Only whitespace in the first 64 KiB (and nothing after)."""
    with open(path, "rb") as handle:
        head = handle.read(65536)
        return not head.strip() and not handle.read(1)


def parse_map_keys(text: str, fmt: str) -> dict[str, Any]:
    """--map-keys: a JSON object of the handler's fields -> column names ("tags": an object of tag fields)."""
    fields = MAP_FIELDS["alpaca" if fmt == "alpaca" else "sharegpt"]
    example = '{"prompt": "question", "response": "answer"}' if fmt == "alpaca" else '{"messages": "conversation"}'
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--map-keys is not valid JSON ({exc}); pass an object such as {example}") from None
    if not isinstance(value, dict) or not value:
        raise UsageError(f"--map-keys must be a JSON object of field: column, such as {example}")
    for key, column in value.items():
        if key not in fields:
            raise UsageError(f"--map-keys: '{key}' is not a field of --format {fmt}; use {', '.join(fields)}")
        if key == "tags":
            if not isinstance(column, dict) or not all(
                k in TAG_FIELDS and isinstance(v, str) for k, v in column.items()
            ):
                raise UsageError(f"--map-keys: 'tags' must be an object of {', '.join(TAG_FIELDS)} -> strings")
        elif not isinstance(column, str) or not column:
            raise UsageError(f"--map-keys: '{key}' must name a column (a string), not {json.dumps(column)}")
    return value


def map_keys_problems(path: str, mapping: dict[str, Any]) -> list[str]:
    """Every column --map-keys names is in the first record (and its tags in the first message)."""
    try:
        record = first_record(path)
    except ValueError as exc:
        return [f"--input {path}: not valid JSON ({exc})"]
    except OSError as exc:
        return [f"--input {path}: cannot read ({exc.strerror})"]
    if record is None:
        return []
    missing = [column for key, column in mapping.items() if key != "tags" and column not in record]
    if missing:
        keys = ", ".join(sorted(map(str, record))[:8])
        return [f"--map-keys names {', '.join(missing)}, but the first record of {path} has only [{keys}]"]
    messages = record.get(mapping.get("messages", "messages"))
    tags = mapping.get("tags") or {}
    if isinstance(messages, list) and messages and isinstance(messages[0], dict):
        absent = [tags[t] for t in ("role_tag", "content_tag") if t in tags and tags[t] not in messages[0]]
        if absent:
            return [f"--map-keys tags name {', '.join(absent)}, but the first message of {path} has no such key"]
    return []


def sniff(path: str, fmt: str, json_keys: Sequence[str] = ("text",)) -> list[str]:
    """Check the first record has the keys --format expects; name the right format if not."""
    try:
        record = first_record(path)
    except ValueError as exc:
        return [f"--input {path}: not valid JSON ({exc})"]
    except OSError as exc:
        return [f"--input {path}: cannot read ({exc.strerror})"]
    if record is None:
        return []
    expected = tuple(json_keys) if fmt == "pretrain" else EXPECTED_KEYS[fmt]
    if all(k in record for k in expected):
        if fmt == "openai":
            messages = record.get("messages")
            if not isinstance(messages, list) or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in messages
            ):
                return [f"--input {path}: 'messages' must be a list of {{role, content}} objects"]
        return []
    guessed = guess_format(record)
    keys = ", ".join(sorted(map(str, record))[:6])
    mapping = "--json-keys COLUMN to name the text column" if fmt == "pretrain" else "--map-keys to map your columns"
    hint = f"; it looks like --format {guessed}" if guessed and guessed != fmt else f"; pass {mapping}"
    return [f"--input {path}: the first record has keys [{keys}], not {list(expected)} as --format {fmt} expects{hint}"]

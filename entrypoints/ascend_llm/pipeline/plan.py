"""From a pipeline file to a checked plan: every step's request, what runs, and every problem.

Each step is handed to its stage exactly as a command line would be: its options become the
stage's argv and go through ``cli.build_request`` (parsing, config-style validation, presets,
release, rendezvous), then ``stage.preflight`` and ``stage.compose``. Nothing about a stage's
options is re-implemented here. What the pipeline adds is what no single stage can see:

* which steps run (records in ``state.py``; ``--from``/``--only``): the first step whose record is
  missing or whose inputs or outputs changed runs, and every step after it;
* "will be produced by step X": a later step's preflight cannot see files an earlier step of this
  run will write, so its problems that name such a path are deferred (the stage checks them again
  when the step starts, by then against real files) and listed as deferred;
* cross-step agreement: the layout a step loads equals the layout its producer writes, training
  uses the prompt type its data was preprocessed with, LoRA consumers use the LoRA step's
  r/alpha/targets, every step uses the same tokenizer files, and the disk holds every checkpoint the
  run writes, not just each one alone.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ascend_llm import __version__, checkpoint, preflight
from ascend_llm.errors import AscendLLMError
from ascend_llm.options import Option
from ascend_llm.pipeline import state as states
from ascend_llm.pipeline.spec import PipelineSpec, StepSpec, substitute
from ascend_llm.script import LaunchScript
from ascend_llm.stages.base import Stage, StageRequest
from ascend_llm.stages.convert import ConvertStage
from ascend_llm.stages.evaluate import EvaluateStage
from ascend_llm.stages.lora import LoraStage
from ascend_llm.stages.lora_args import DEFAULTS as LORA_DEFAULTS
from ascend_llm.stages.preprocess import PreprocessStage
from ascend_llm.stages.training import TrainingStage

INPUT_KEYS = ("load", "lora_load", "data", "input", "tokenizer", "hf_dir")
LORA_KEYS = ("lora_r", "lora_alpha", "lora_target_modules")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
)

Builder = Callable[[Stage, list], StageRequest]


@dataclass
class Output:
    """Something a step writes that later steps (or the user) read."""

    path: str
    kind: str  # checkpoint | hf | data-instruction | data-pretrain | report
    layout: tuple[int, int] | None = None


@dataclass
class Step:
    """One step of the plan: the spec, the stage's request and script, and what to do with it."""

    spec: StepSpec
    stage: Stage
    options: dict[str, Any] = field(default_factory=dict)
    argv: list[str] | None = None
    base_argv: list[str] | None = None  # before --resume/--overwrite: what the record's inputs hash
    req: StageRequest | None = None
    script: LaunchScript | None = None
    values: dict[str, Any] | None = None
    outputs: list[Output] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    decision: str = "run"  # run | skip | not selected
    reason: str = ""
    resume: bool = False
    record: dict[str, Any] | None = None
    input_digest: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        if self.req is not None and isinstance(self.stage, EvaluateStage) and self.req.opts.get("task"):
            return f"evaluate {self.req.opts['task']}"
        return self.spec.label

    def stage_argv(self) -> list[str]:
        """``<stage> [action] --opt value ...``: what ``ascend-llm`` is given for this step."""
        assert self.argv is not None
        return [self.spec.stage, *self.argv]

    def command_line(self) -> str:
        return "ascend-llm " + " ".join(shlex.quote(t) for t in self.stage_argv())

    @property
    def result(self) -> str | None:
        return self.values.get("result") if self.values else None


@dataclass
class Plan:
    spec: PipelineSpec
    state: states.State
    steps: list[Step]
    problems: list[str] = field(default_factory=list)

    def running(self) -> list[Step]:
        return [s for s in self.steps if s.decision == "run"]

    def all_problems(self) -> list[str]:
        out = [f"step {s.name}: {p}" for s in self.steps if s.decision != "not selected" for p in s.problems]
        return out + self.problems


# -- options -> argv --------------------------------------------------------------------------------
def option_index(stage: Stage) -> dict[str, Option]:
    """Every name a step may use for an option: its dest and its flags without dashes."""
    index: dict[str, Option] = {}
    for option in stage.options():
        index[option.dest] = option
        for flag in option.flags:
            index[flag.lstrip("-").replace("-", "_")] = option
    return index


def scalar_text(value: Any, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or isinstance(value, (dict, list)):
        raise AscendLLMError(f"'{key}': expected a single value, got {type(value).__name__}")
    return str(value)


def option_tokens(option: Option, key: str, value: Any) -> list[str]:
    """One option's argv tokens, spelled as the stage's parser reads them."""
    flag = option.flags[0]
    if option.is_switch:
        if not isinstance(value, bool):
            raise AscendLLMError(f"'{key}' is the switch {flag}: true or false, not {value!r}")
        return [flag] if value else []
    many = option.kwargs.get("nargs") in ("+", "*")
    append = option.kwargs.get("action") == "append"
    if isinstance(value, list) and not (many or append):
        raise AscendLLMError(f"'{key}' ({flag}) takes one value, not a list")
    texts = [scalar_text(v, key) for v in (value if isinstance(value, list) else [value])]
    if many:
        return [flag, *texts]
    # `--flag=-x` keeps a value that starts with '-' from being read as an option
    return [t for text in texts for t in ([f"{flag}={text}"] if text.startswith("-") else [flag, text])]


def unknown_option(key: str, step: StepSpec, stage: Stage, index: dict[str, Option]) -> str:
    close = difflib.get_close_matches(key, list(index), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown option '{key}' for {step.label}{hint} (see ascend-llm {stage.name} --help)"


def step_argv(step: StepSpec, stage: Stage, options: dict[str, Any]) -> list[str]:
    """The stage's argv for these (resolved) options; unknown names are refused with a suggestion."""
    index = option_index(stage)
    argv: list[str] = [step.action] if step.action else []
    problems: list[str] = []
    for key, value in options.items():
        option = index.get(key)
        if option is None:
            problems.append(unknown_option(key, step, stage, index))
            continue
        if value is None:
            continue
        try:
            argv += option_tokens(option, key, value)
        except AscendLLMError as exc:
            problems += exc.lines
    if problems:
        raise AscendLLMError(*problems)
    if step.extra:
        argv += ["--", *step.extra]
    return argv


# -- what a step reads and writes -------------------------------------------------------------------
def norm(path: Any) -> str | None:
    return os.path.normpath(path) if isinstance(path, str) and path else None


def outputs_of(stage: Stage, req: StageRequest) -> tuple[list[Output], str | None]:
    """What the step writes, and its ``result``: the value a later step most often loads."""
    o = req.opts
    if isinstance(stage, ConvertStage):
        target = stage.target(req)
        if o.get("hf_dir"):
            return [Output(target, "hf")], target
        return [Output(target, "checkpoint", (o["tp"], o["pp"]))], target
    if isinstance(stage, PreprocessStage):
        prefix = o["output_prefix"]
        if o.get("format") == "pretrain":
            return [Output(f"{prefix}_text_document", "data-pretrain")], f"{prefix}_text_document"
        return [Output(prefix, "data-instruction")], prefix
    if isinstance(stage, TrainingStage):
        return [Output(o["save"], "checkpoint", (o["tp"], o["pp"]))], o["save"]
    if isinstance(stage, EvaluateStage) and EvaluateStage.is_accuracy(req):
        return [Output(o["output"], "report")], o["output"]
    return [], None


def inputs_of(req: StageRequest) -> dict[str, str]:
    return {k: req.opts[k] for k in INPUT_KEYS if isinstance(req.opts.get(k), str) and req.opts[k]}


def tokenizer_dir(stage: Stage, req: StageRequest) -> str | None:
    """The directory whose tokenizer files the step uses."""
    if isinstance(stage, ConvertStage):
        return os.path.dirname(stage.tokenizer_model(req)) if req.action == "hf2mcore" else None
    value = req.opts.get("tokenizer")
    return value if isinstance(value, str) and value else None


def tokenizer_digest(directory: str) -> str | None:
    """sha256 over the content of the tokenizer files present (a copy of the directory is the same
    tokenizer; Qwen3's tokenizer.json is 11 MB, read once per directory); None where there are none."""
    digest = hashlib.sha256()
    found = False
    for name in TOKENIZER_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            found = True
            digest.update(name.encode() + b"\0" + states.hash_file(path).encode())
    return digest.hexdigest() if found else None


def tracker_state(save: str | None) -> list[Any] | None:
    """The save directory's tracker file as a fingerprint entry (None when there is no checkpoint)."""
    if not save:
        return None
    tracker = os.path.join(save, checkpoint.TRACKER)
    if not os.path.isfile(tracker):
        return None
    st = os.stat(tracker)
    return [st.st_size, st.st_mtime_ns, Path(tracker).read_text(encoding="utf-8", errors="replace").strip()]


# -- planning ----------------------------------------------------------------------------------------
class Planner:
    """Builds a Plan in one pass (see the module docstring)."""

    def __init__(
        self,
        spec: PipelineSpec,
        stages: dict[str, Stage],
        build: Builder,
        *,
        dry_run: bool = False,
        start_from: str | None = None,
        only: str | None = None,
        preflight_here: bool = True,
    ) -> None:
        self.spec = spec
        self.stages = stages
        self.build = build
        self.dry_run = dry_run
        self.start_from = start_from
        self.only = only
        self.preflight_here = preflight_here
        self.state = states.State(spec.output)
        self.steps: list[Step] = []
        self.problems: list[str] = []

    # references ------------------------------------------------------------------------------------
    def lookup(self, ref: str) -> Any:
        parts = ref.split(".")
        if ref == "output":
            return self.spec.output
        if parts[0] == "inputs" and len(parts) == 2:
            if parts[1] in self.spec.inputs:
                return os.path.normpath(self.spec.inputs[parts[1]])
            raise KeyError(f"${{{ref}}}: no input '{parts[1]}' (inputs: {', '.join(self.spec.inputs) or 'none'})")
        if parts[0] == "steps" and len(parts) == 3:
            name, key = parts[1], parts[2].replace("-", "_")
            done = {s.name: s for s in self.steps}
            if name not in done:
                later = name in self.spec.names()
                raise KeyError(
                    f"${{{ref}}}: "
                    + (
                        f"step {name} comes later; a step can only use the values of earlier steps"
                        if later
                        else f"no step named {name}"
                    )
                )
            step = done[name]
            if step.values is None:
                raise KeyError(f"${{{ref}}}: step {name} has problems (listed with it), so its values are unknown")
            if step.values.get(key) is not None:
                return step.values[key]
            known = sorted(k for k, v in step.values.items() if v is not None)
            raise KeyError(f"${{{ref}}}: step {name} ({step.label}) has no value '{key}'; it has {', '.join(known)}")
        raise KeyError(f"${{{ref}}}: unknown reference; use ${{inputs.NAME}}, ${{output}} or ${{steps.STEP.OPTION}}")

    def resolve_options(self, spec: StepSpec, stage: Stage) -> dict[str, Any]:
        """Defaults the stage has an option for, then the step's own options; references substituted."""
        index = option_index(stage)
        merged = {k: v for k, v in self.spec.defaults.items() if k in index and k not in spec.options}
        merged.update(spec.options)
        out: dict[str, Any] = {}
        problems: list[str] = []
        for key, value in merged.items():
            if key not in index:
                problems.append(unknown_option(key, spec, stage, index))
                continue
            try:
                out[key] = substitute(value, self.lookup)
            except KeyError as exc:
                problems.append(f"'{key}': {exc.args[0]}")
        if problems:
            raise AscendLLMError(*problems)
        return out

    def producer(
        self, path: Any, kinds: tuple[str, ...] = (), before: Step | None = None
    ) -> tuple[Step, Output] | None:
        """The earlier step (before ``before``, or any planned so far) that writes ``path``, and what."""
        wanted = norm(path)
        if not wanted:
            return None
        for step in self.steps:
            if step is before:
                break
            for out in step.outputs:
                if norm(out.path) == wanted and (not kinds or out.kind in kinds):
                    return step, out
        return None

    def inherit_lora(self, options: dict[str, Any]) -> None:
        """A step that loads the LoRA step's adapters takes its r/alpha/targets unless it sets them."""
        lora_load = options.get("lora_load")
        found = self.producer(os.path.abspath(lora_load) if isinstance(lora_load, str) else None)
        if found and isinstance(found[0].stage, LoraStage) and found[0].req:
            for key in LORA_KEYS:
                if options.get(key) is None:
                    options[key] = found[0].req.opts[key]

    # one step ----------------------------------------------------------------------------------------
    def make_request(self, step: Step, options: dict[str, Any]) -> bool:
        """argv -> request -> outputs and script; False (with problems) when the stage refuses."""
        try:
            step.argv = step_argv(step.spec, step.stage, options)
            argv = list(step.argv)
            if self.dry_run and "dry_run" in option_index(step.stage):  # before any `--`: the stage's options end there
                at = argv.index("--") if "--" in argv else len(argv)
                argv.insert(at, "--dry-run")
            req = self.build(step.stage, argv)
            script = None if uncomposed(step.stage) else step.stage.compose(req)
        except AscendLLMError as exc:
            step.problems += exc.lines
            step.req = step.script = step.values = None
            return False
        step.req, step.script = req, script
        step.outputs, result = outputs_of(step.stage, step.req)
        step.inputs = inputs_of(step.req)
        step.values = {**step.req.opts, "result": result}
        return True

    def plan_step(self, spec: StepSpec) -> Step:
        stage = self.stages[spec.stage]
        step = Step(spec, stage)
        try:
            options = self.resolve_options(spec, stage)
        except AscendLLMError as exc:
            step.problems += exc.lines
            return step
        if "log_dir" in option_index(stage):  # logs of the run in one place, out of every step's outputs
            options.setdefault("log_dir", str(self.state.logs / spec.name))
        self.inherit_lora(options)
        step.options = options
        if self.make_request(step, options):
            step.base_argv = list(step.argv or [])
        return step

    # decisions ---------------------------------------------------------------------------------------
    def input_digest(self, step: Step) -> dict[str, Any]:
        """What a finished step's record must match: its argv and what is at each input path."""
        exclude = (str(self.state.root),)
        detail: dict[str, Any] = {
            "argv": states.combined({"argv": [step.spec.stage, *(step.base_argv or [])], "ascend_llm": __version__}),
        }
        for key, path in sorted(step.inputs.items()):
            detail[key] = states.combined(states.fingerprint(path, exclude))
        return {"digest": states.combined(detail), "detail": detail}

    def outputs_intact(self, step: Step, record: dict[str, Any]) -> str | None:
        """None when every recorded output is as the record left it, else what changed."""
        recorded = record.get("outputs") or {}
        for out in step.outputs:
            before = (recorded.get(out.path) or {}).get("fingerprint")
            if before is None:
                return f"its output {out.path} is not in its record"
            if states.fingerprint(out.path, (str(self.state.root),)) != before:
                return f"its output {out.path} changed or is gone"
        return None

    def selection(self, step: Step, index: int) -> tuple[str, str] | None:
        """What --only/--from decide for this step, or None when they are not given."""
        if self.only:
            return ("run", "--only") if step.name == self.only else ("not selected", f"--only {self.only}")
        if self.start_from:
            if index < self.spec.names().index(self.start_from):
                return "not selected", f"before --from {self.start_from}"
            return "run", f"--from {self.start_from}"
        return None

    def decide(self, step: Step, index: int, running_before: Step | None) -> None:
        step.record = self.state.record(step.name)
        chosen = self.selection(step, index)
        if chosen or step.req is None:
            step.decision, step.reason = chosen or ("run", "its options have problems")
            return
        if running_before is not None:
            step.decision, step.reason = "run", f"step {running_before.name} runs before it"
            return
        record = step.record
        if record is None:
            step.decision, step.reason = "run", "no record of a finished run"
            return
        if "unreadable" in record:
            step.decision, step.reason = "run", f"its record {record['unreadable']} is unreadable"
            return
        digest = step.input_digest or self.input_digest(step)
        step.input_digest = digest
        old = (record.get("inputs") or {}).get("detail") or {}
        if (record.get("inputs") or {}).get("digest") != digest["digest"]:
            changed = [k for k, v in digest["detail"].items() if old.get(k) != v]
            what = (
                ", ".join("its options" if k == "argv" else f"its {k} {step.inputs.get(k)}" for k in changed)
                or "its inputs"
            )
            step.decision, step.reason = "run", f"changed since it finished: {what}"
            return
        broken = self.outputs_intact(step, record)
        if broken:
            step.decision, step.reason = "run", broken
            return
        step.decision, step.reason = "skip", f"finished {record.get('finished', '?')}; inputs and outputs unchanged"

    def run_modes(self, step: Step, first: bool) -> None:
        """Resume a stopped training step from its own checkpoint; let convert overwrite its own target."""
        changes: dict[str, Any] = {}
        marker = self.state.marker(step.name)
        mine = {p for rec in (step.record, marker) if rec and "unreadable" not in rec for p in rec.get("outputs") or {}}
        if isinstance(step.stage, TrainingStage) and first and marker and "unreadable" not in marker:
            digest = step.input_digest or self.input_digest(step)
            step.input_digest = digest
            now = tracker_state(step.req.opts.get("save") if step.req else None)
            if (marker.get("inputs") or {}).get("digest") == digest["digest"] and now and now != marker.get("baseline"):
                changes["resume"] = True
        if isinstance(step.stage, ConvertStage) and step.req and not step.options.get("overwrite"):
            target = step.stage.target(step.req)
            if target in mine and step.stage.target_clean(step.req):
                changes["overwrite"] = True
        if changes and step.req:
            options = {**step.options, **changes}
            step.problems = []
            if self.make_request(step, options):
                step.options = options
                step.resume = bool(changes.get("resume"))

    # checks ------------------------------------------------------------------------------------------
    def step_preflight(self, step: Step, produced: dict[str, str]) -> None:
        """The stage's own preflight; problems naming a path an earlier running step writes are deferred."""
        assert step.req is not None
        try:
            problems = step.stage.preflight(step.req)
        except AscendLLMError as exc:
            problems = exc.lines
        for problem in problems:
            by = [name for path, name in produced.items() if path in problem]
            if by:
                step.deferred.append(f"{problem} [written by step {by[0]} before this step; checked when it starts]")
            else:
                step.problems.append(problem)
        for note in step.req.notes:
            if not any(path in note for path in produced):
                step.notes.append(note)

    def cross_checks(self) -> None:
        writers: dict[str, Step] = {}
        for step in self.steps:
            if step.req is None:
                continue
            step.problems += self.layout_problems(step) + self.prompt_problems(step) + self.lora_problems(step)
            for out in step.outputs:
                first = writers.setdefault(norm(out.path) or "", step)
                if first is not step:
                    step.problems.append(f"it writes {out.path}, which step {first.name} writes too; give it its own")
        self.tokenizer_problems()
        if self.preflight_here:  # else the run is checked where it runs (invoke pipeline: in the image)
            self.disk_problems()

    def layout_problems(self, step: Step) -> list[str]:
        o, stage = step.req.opts, step.stage
        loads_checkpoint = isinstance(stage, TrainingStage) or (
            stage.name in ("generate", "evaluate") and not EvaluateStage.is_accuracy(step.req)
        )
        found = self.producer(o.get("load"), before=step)
        if not found:
            return []
        source, out = found
        if isinstance(stage, EvaluateStage) and EvaluateStage.is_accuracy(step.req):
            if out.kind != "hf":
                return [
                    f"--task accuracy loads {out.path} from step {source.name}, which writes a Megatron checkpoint; "
                    f"load the HF weights of a `convert mcore2hf` step (${{steps.STEP.result}})"
                ]
            return []
        if not loads_checkpoint:
            return []
        if out.kind != "checkpoint":
            return [
                f"it loads {out.path}, which step {source.name} writes as {out.kind}; "
                f"{step.label} needs a Megatron checkpoint (a convert to mcore or training step)"
            ]
        want = (o["tp"], o["pp"])
        if out.layout and out.layout != want:
            fix = (
                f"give step {source.name} `for: {stage.name}` or tp: {want[0]} and pp: {want[1]}"
                if isinstance(source.stage, ConvertStage)
                else f"re-shard it with a `convert mcore2mcore` step (tp: {want[0]}, pp: {want[1]})"
            )
            return [
                f"it runs TP{want[0]} PP{want[1]} but loads {out.path}, which step {source.name} writes split "
                f"TP{out.layout[0]} PP{out.layout[1]}; {fix}, or set this step's tp: {out.layout[0]}, "
                f"pp: {out.layout[1]}"
            ]
        return []

    def prompt_problems(self, step: Step) -> list[str]:
        if not isinstance(step.stage, TrainingStage):
            return []
        found = self.producer(step.req.opts.get("data"), ("data-instruction", "data-pretrain"), before=step)
        if not found:
            return []
        source, out = found
        pretraining = step.stage.name == "pretrain"
        if pretraining != (out.kind == "data-pretrain"):
            wanted = "pretrain" if pretraining else "alpaca, sharegpt or openai"
            return [
                f"it trains on {out.path}, which step {source.name} preprocesses with format "
                f"{source.req.opts.get('format')}; {step.label} needs format {wanted}"
            ]
        if pretraining or step.script is None or source.script is None:
            return []
        mine, theirs = step.script.flag_values("--prompt-type"), source.script.flag_values("--prompt-type")
        if mine != theirs:
            shown = " ".join(mine or ("(none)",))
            other = " ".join(theirs or ("(none)",))
            return [
                f"it trains with prompt type {shown} but step {source.name} preprocessed {out.path} with "
                f"prompt type {other}; the chat template must be the same: set prompt_type: {other} here "
                f"(or the same value in both steps)"
            ]
        return []

    def lora_problems(self, step: Step) -> list[str]:
        o = step.req.opts
        found = self.producer(o.get("lora_load"), before=step)
        if not found or not o.get("lora_load"):
            return []
        source, out = found
        if not isinstance(source.stage, LoraStage):
            return [f"--lora-load {out.path} is written by step {source.name} ({source.label}), not by a lora step"]
        problems = []
        for key in LORA_KEYS:
            mine, theirs = o.get(key, LORA_DEFAULTS[key]), source.req.opts.get(key)
            if isinstance(mine, list) and isinstance(theirs, list):
                same = sorted(mine) == sorted(theirs)
            else:
                same = str(mine) == str(theirs)
            if not same:
                flag = "--" + key.replace("_", "-")
                shown = " ".join(theirs) if isinstance(theirs, list) else theirs
                given = " ".join(mine) if isinstance(mine, list) else mine
                problems.append(
                    f"{flag} {given} differs from step {source.name}, which trains the adapters in {out.path} with "
                    f"{flag} {shown}; drop {key} here (it is taken from step {source.name}) or make them equal"
                )
        base = self.producer(o.get("load"), ("checkpoint",), before=step)
        if step.stage.name == "convert" and base and base[1].layout and out.layout and base[1].layout != out.layout:
            problems.append(
                f"the base {base[1].path} (step {base[0].name}) is split TP{base[1].layout[0]} PP{base[1].layout[1]} "
                f"but the adapters of step {source.name} are TP{out.layout[0]} PP{out.layout[1]}; merge into the "
                f"base the LoRA step trained on"
            )
        return problems

    def tokenizer_problems(self) -> None:
        groups: dict[str, list[tuple[Step, str]]] = {}
        digests: dict[str, str | None] = {}
        for step in self.steps:
            if step.req is None:
                continue
            directory = tokenizer_dir(step.stage, step.req)
            if directory and directory not in digests:
                digests[directory] = tokenizer_digest(directory) if os.path.isdir(directory) else None
            digest = digests.get(directory) if directory else None
            if digest:
                groups.setdefault(digest, []).append((step, directory))
        if len(groups) > 1:
            parts = []
            for members in groups.values():
                dirs = sorted({d for _, d in members})
                parts.append(f"{', '.join(s.name for s, _ in members)} use {' and '.join(dirs)}")
            self.problems.append(
                "the steps use different tokenizers (their tokenizer files differ): "
                + "; ".join(parts)
                + "; every step must use the tokenizer of the model being trained (set tokenizer: in defaults)"
            )

    def disk_problems(self) -> None:
        """Every checkpoint the running steps write, summed per volume, against its free space."""
        per_volume: dict[int, list[tuple[Step, str, int]]] = {}
        for step in self.running():
            if step.req is None or step.req.preset is None:
                continue
            if isinstance(step.stage, TrainingStage):
                saves = preflight.saves_count(step.req.opts["train_iters"], step.req.opts["save_interval"])
                need = preflight.checkpoint_bytes(step.req.preset, step.stage.bytes_kind, saves)
            elif isinstance(step.stage, ConvertStage):
                need = preflight.checkpoint_bytes(step.req.preset, "weights")
            else:
                continue
            for out in step.outputs:
                probe = Path(out.path)
                while not probe.exists() and probe.parent != probe:
                    probe = probe.parent
                try:
                    device = os.stat(probe).st_dev
                except OSError:
                    continue
                per_volume.setdefault(device, []).append((step, str(probe), need))
        for entries in per_volume.values():
            total = sum(need for _, _, need in entries)
            if len(entries) < 2 or not total:
                continue
            free = preflight.shutil.disk_usage(entries[0][1]).free
            if free < total:
                detail = ", ".join(f"{s.name} {need / preflight.GB:.1f} GB" for s, _, need in entries)
                self.problems.append(
                    f"the run writes about {total / preflight.GB:.1f} GB of checkpoints to the volume of "
                    f"{entries[0][1]} ({detail}) but only {free / preflight.GB:.1f} GB are free there; "
                    f"free space or put the outputs on another volume"
                )

    def running(self) -> list[Step]:
        return [s for s in self.steps if s.decision == "run"]

    # the whole plan ----------------------------------------------------------------------------------
    def plan(self) -> Plan:
        for name in (self.start_from, self.only):
            if name:
                self.spec.step(name)
        if self.start_from and self.only:
            raise AscendLLMError("--from and --only together: choose one")
        running_before: Step | None = None
        for index, spec in enumerate(self.spec.steps):
            step = self.plan_step(spec)
            self.steps.append(step)
            self.decide(step, index, running_before)
            if step.decision == "run" and step.req is not None:
                self.run_modes(step, first=running_before is None)
            if step.decision == "run" and running_before is None:
                running_before = step
        produced: dict[str, str] = {}
        for step in self.steps:
            if step.decision == "run" and step.req is not None and self.preflight_here:
                self.step_preflight(step, produced)
            if step.decision == "run":
                for out in step.outputs:
                    produced[out.path] = step.name
        self.cross_checks()
        return Plan(self.spec, self.state, self.steps, self.problems)


def uncomposed(stage: Stage) -> bool:
    """``check`` runs in-process and composes no LaunchScript."""
    return stage.name == "check"

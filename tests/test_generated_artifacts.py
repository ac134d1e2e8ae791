"""Property: user text reaches a generated artifact only through a quoting or serialising function.

Paths and arguments full of newlines, quotes, ``$()``, backticks, control characters and bytes that
are not UTF-8 go through every generator, and then:

* a launch script (``ascend-llm <stage> --dry-run``, what a real run executes) and a ``docker run``
  line (``invoke run --print``) are run by bash with the command replaced by a recorder: a PATH that
  holds only stand-ins for ``torchrun``/``python3``/``docker``/``mkdir``, which write down their argv,
  and a ``command_not_found_handle`` that writes down anything else the script tried to run. The
  recorder must have run once with exactly the intended argv (and stdin, and environment value), and
  nothing else may have run;
* a k8s manifest (``invoke k8s``) parses to exactly the intended object, under its three comment lines;
* the Markdown of ``invoke manifest`` keeps its structure (headings, table cells, the code block), and
  the JSON of an accuracy report reads back equal.

Bounded and derandomised, so CI runs the same examples in a few seconds.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO / "entrypoints", REPO / "tests" / "entrypoints"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from ascend_llm import accuracy, cli  # noqa: E402
from ascend_llm.stages import STAGES  # noqa: E402
from stagekit import LAUNCHER_VARS  # noqa: E402

from ascend_stack import k8s, manifest, run  # noqa: E402

BOUNDED = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],  # no "explain": its tracing takes minutes here
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CANARY = "/tmp/ascend-llm-stack-canary-{pid}"
PIECES = [
    "\n", "\r", "\t", "\n\n", "'", '"', "'\"'", "\\", "$(touch CANARY)", "`touch CANARY`", "\ntouch CANARY\n",
    "; touch CANARY", "' ; touch CANARY ; '", '" ; touch CANARY ; "', "$HOME", "${IFS}", "}", "${X:-y}", "#",
    "\n# ", "&&", "|", "*", "?", "~", "!", " ", "-", "--x", "\x1b[31m", "\x07", "\x7f", "\x85", "\u2028",
    "é", "中文", "\udcff", "\udc80", "ASCEND_LLM_INPUT", "EOF",
]  # fmt: skip
NAME_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/")


def hostile(allow: str = "") -> st.SearchStrategy[str]:
    """Text built from dangerous pieces and random characters (never NUL: argv cannot carry it)."""
    canary = CANARY.format(pid=os.getpid())
    piece = st.one_of(st.sampled_from(PIECES), st.text(NAME_CHARS, min_size=1, max_size=4))
    return st.lists(piece, min_size=1, max_size=5).map(lambda parts: "".join(parts).replace("CANARY", canary))


def name() -> st.SearchStrategy[str]:
    """A hostile file name: one path component (no '/', not '.' or '..'), so it stays in the test folder."""
    return hostile().map(lambda s: s.replace("/", "_")).filter(lambda s: s not in (".", ".."))


# -- the recorder --------------------------------------------------------------------------------
RECORDER = """#!/bin/bash
# stands in for {name}: writes its argv (NUL-separated), its stdin and $HOSTILE_ENV, and runs nothing
printf '%s\\0' "$@" > "$RECORD/{name}.argv"
/bin/cat > "$RECORD/{name}.stdin"
printf '%s' "${{HOSTILE_ENV-unset}}" > "$RECORD/{name}.env"
"""
MKDIR = """#!/bin/bash
printf '%s\\0' "$@" >> "$RECORD/mkdir.argv"
"""


@contextmanager
def recorder() -> Iterator[Path]:
    """A folder with bin/ (the stand-ins, alone on PATH), record/ and the canary's place."""
    with tempfile.TemporaryDirectory(prefix="recorder-") as tmp:
        root = Path(tmp)
        (root / "bin").mkdir()
        (root / "record").mkdir()
        for program in ("torchrun", "python3", "docker"):
            (root / "bin" / program).write_text(RECORDER.format(name=program))
        (root / "bin" / "mkdir").write_text(MKDIR)
        for path in (root / "bin").iterdir():
            path.chmod(0o755)
        yield root


def run_recorded(script: bytes, root: Path, stdin: bytes = b"") -> dict[str, Any]:
    """Run ``script`` with bash under the recorder; what each stand-in saw, and what else was tried."""
    unexpected = root / "record" / "unexpected"
    env = {
        "PATH": str(root / "bin"),
        "RECORD": str(root / "record"),
        "HOME": str(root),
        "BASH_FUNC_command_not_found_handle%%": f'() {{ printf "%s\\n" "$*" >> {unexpected}; return 127; }}',
    }
    (root / "script.sh").write_bytes(script)
    done = subprocess.run(["/bin/bash", str(root / "script.sh")], env=env, input=stdin, capture_output=True)
    seen: dict[str, Any] = {"code": done.returncode, "stderr": done.stderr.decode(errors="replace")}
    for path in (root / "record").iterdir():
        data = path.read_bytes()
        seen[path.name] = data
    return seen


def argv_of(seen: dict[str, Any], program: str) -> list[str]:
    data: bytes = seen[f"{program}.argv"]
    return [os.fsdecode(part) for part in data.split(b"\0")[:-1]]


def only(seen: dict[str, Any], program: str) -> list[str]:
    """The script ran ``program`` (once: it ends in exec) and nothing else, and created no canary."""
    assert seen["code"] == 0, seen["stderr"]
    assert "unexpected" not in seen, seen["unexpected"]
    assert not os.path.lexists(CANARY.format(pid=os.getpid()))
    others = {"torchrun", "python3", "docker"} - {program}
    assert not any(f"{other}.argv" in seen for other in others)
    return argv_of(seen, program)


# -- ascend-llm launch scripts -------------------------------------------------------------------
@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No NPUs, a MindSpeed-LLM home the script can cd into, no launcher variables."""
    (tmp_path / "sysroot").mkdir()
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("ASCEND_LLM_SYSROOT", str(tmp_path / "sysroot"))
    monkeypatch.setenv("MINDSPEED_LLM_HOME", str(tmp_path / "home"))
    for var in LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    # accuracy runs `sys.executable -m ascend_llm.accuracy`; here it must be the python3 stand-in
    monkeypatch.setattr("ascend_llm.stages.evaluate.this_python", lambda: "python3")
    return tmp_path


def dry_run(argv: list[str]) -> bytes:
    """``ascend-llm ARGV --dry-run`` in-process: the script's bytes exactly as printed."""
    buffer = io.BytesIO()
    out = io.TextIOWrapper(buffer, encoding="utf-8", newline="")
    err = io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(argv)
    out.flush()
    assert code == 0, err.getvalue()
    assert all(len(line) < 2000 and "\n" not in line for line in err.getvalue().splitlines())
    return buffer.getvalue()


def intended(argv: list[str]) -> list[str]:
    """The argv the stage composes for this command line (what the recorder must see)."""
    stage = STAGES[argv[0]]
    with redirect_stderr(io.StringIO()):
        return stage.compose(cli.build_request(stage, argv[1:])).argv()[1:]  # argv[0] is the program itself


def value_after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


@BOUNDED
@given(save=name(), data=name(), tokenizer=name(), load=name(), env=hostile(), flag_value=hostile())
def test_sft_script_runs_only_torchrun_with_the_given_paths(machine, save, data, tokenizer, load, env, flag_value):
    base = machine / "paths"
    argv = ["sft", "--model", "qwen3-14b", "--save", str(base / save), "--data", str(base / data),
            "--tokenizer", str(base / tokenizer), "--load", str(base / load), "--env", f"HOSTILE_ENV={env}",
            "--dry-run", "--no-preflight", "--", "--hostile-flag", flag_value]  # fmt: skip
    script = dry_run(argv)
    with recorder() as root:
        seen = run_recorded(script, root)
    got = only(seen, "torchrun")
    assert got == intended(argv)
    for flag, value in (("--save", save), ("--data-path", data), ("--tokenizer-name-or-path", tokenizer)):
        assert value_after(got, flag) == os.path.abspath(base / value)
    assert got[-2:] == ["--hostile-flag", flag_value]
    assert seen["torchrun.env"] == os.fsencode(env)
    made = argv_of(seen, "mkdir")
    assert made == ["-p", "--", os.path.abspath(base / save)]


@BOUNDED
@given(load=name(), data=name(), output=name())
def test_accuracy_script_runs_only_the_evaluator_with_the_given_paths(machine, load, data, output):
    base = machine / "paths"
    argv = ["evaluate", "--task", "accuracy", "--load", str(base / load), "--data", str(base / data) + ".jsonl",
            "--output", str(base / output), "--dry-run", "--no-preflight"]  # fmt: skip
    script = dry_run(argv)
    with recorder() as root:
        seen = run_recorded(script, root)
    got = only(seen, "python3")
    assert got == intended(argv)
    assert got[:2] == ["-m", "ascend_llm.accuracy"]
    assert value_after(got, "--output") == os.path.abspath(base / output)
    assert value_after(got, "--data") == os.path.abspath(base / data) + ".jsonl"


@BOUNDED
@given(source=name(), prefix=name(), columns=st.dictionaries(st.sampled_from(["prompt", "query", "response"]),
                                                           hostile(), min_size=1))  # fmt: skip
def test_preprocess_script_passes_paths_and_map_keys_unchanged(machine, source, prefix, columns):
    base = machine / "paths"
    map_keys = json.dumps(columns)
    argv = ["preprocess", "--format", "alpaca", "--input", str(base / source) + ".jsonl", "--output-prefix",
            str(base / prefix), "--tokenizer", str(base / "tok"), "--map-keys", map_keys, "--dry-run",
            "--no-preflight"]  # fmt: skip
    script = dry_run(argv)
    with recorder() as root:
        seen = run_recorded(script, root)
    got = only(seen, "python3")
    assert got == intended(argv)
    assert json.loads(value_after(got, "--map-keys")) == columns
    assert value_after(got, "--output-prefix") == os.path.abspath(base / prefix)


PROMPT = (
    hostile()
    .map(lambda s: s.replace("\n", " "))
    .filter(lambda s: s.strip() and s.strip() not in {"q", "quit", "exit", "clear", "new", "ASCEND_LLM_INPUT"})
)


@BOUNDED
@given(prompts=st.lists(PROMPT, min_size=1, max_size=3), load=name())
def test_generate_prompts_reach_stdin_as_given(machine, prompts, load):
    argv = ["generate", "--model", "qwen3-14b", "--load", str(machine / load), "--tokenizer", str(machine / "tok"),
            "--dry-run", "--no-preflight"]  # fmt: skip
    argv += [f"--prompt={prompt}" for prompt in prompts]  # the = form: a prompt may start with '-'
    script = dry_run(argv)
    with recorder() as root:
        seen = run_recorded(script, root)
    assert only(seen, "torchrun") == intended(argv)
    assert seen["torchrun.stdin"] == os.fsencode("\n".join([*prompts, "quit"]) + "\n")


# -- invoke run --print --------------------------------------------------------------------------
@BOUNDED
@given(command=st.lists(hostile(), min_size=1, max_size=4), env=hostile(), mount=name())
def test_docker_run_line_runs_only_docker_with_the_intended_argv(command, env, mount):
    mount = mount.replace(":", "_")
    opts = run.RunOptions(image="ascend-llm-stack:test", command=["sft", *command], env=[f"HOSTILE={env}"],
                          mounts=[f"/data/{mount}"])  # fmt: skip
    line = run.docker_run(opts)
    with recorder() as root:
        seen = run_recorded(os.fsencode(line.render()), root)
    got = only(seen, "docker")
    assert got == line.argv[1:]
    assert got[-len(command) - 2 :] == ["ascend-llm-stack:test", "sft", *command]
    assert f"HOSTILE={env}" in got and f"/data/{mount}:/data/{mount}" in got


# -- invoke k8s ----------------------------------------------------------------------------------
@BOUNDED
@given(args=st.lists(hostile(), max_size=4), env=hostile(), volume=name(), kind=st.sampled_from(k8s.KINDS))
def test_k8s_manifest_parses_to_exactly_the_intended_object(args, env, volume, kind):
    volume = "/" + volume.replace(":", "_")
    opts = k8s.ManifestOptions(image="registry.local/ascend-llm-stack:test", command=["sft", *args], nodes=2,
                               kind=kind, env=[f"HOSTILE={env}"], volumes=[volume])  # fmt: skip
    argv = ["k8s", "--env", f"HOSTILE={env}", "--volume", volume, "--", "sft", *args]
    text = k8s.render(opts, argv)
    lines = text.split("\n")
    assert [line.startswith("#") for line in lines[:4]] == [True, True, True, False], lines[:4]
    assert yaml.safe_load(text) == k8s.manifest(opts)
    (container,) = k8s.pod_templates(yaml.safe_load(text))[0]["spec"]["containers"]
    assert container["args"] == ["sft", *args]
    assert {"name": "HOSTILE", "value": env} in container["env"]


# -- reports -------------------------------------------------------------------------------------
def manifest_data(value: Any) -> dict[str, Any]:
    """``invoke manifest``'s data with every free-text field set to ``value``."""
    return {
        "image": {"tag": value, "id": value, "created": value, "arch": value},
        "matrix_row": {"row": value, "cann": value},
        "os": {"name": value, "manager": "dpkg", "packages": [{"name": value, "version": value, "arch": value}]},
        "python": {"version": value, "pip_freeze": [value, value]},
        "cann": {
            "stand_in": value,
            "toolkit": value,
            "toolkit_innerversion": value,
            "components": {value: value},
            "kernels": [value],
            "nnal_atb": value,
        },
        "sources": {value: {"ref": value, "commit": value}},
        "labels": {value: value},
    }


def cells(line: str) -> list[str]:
    """A Markdown table row's cells (``\\|`` is a pipe inside a cell)."""
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


@BOUNDED
@given(value=hostile())
def test_manifest_markdown_keeps_its_structure(value):
    data = manifest_data(value)
    text = manifest.to_markdown(data)
    empty = manifest.to_markdown(manifest_data("x")).split("\n")
    lines = text.split("\n")
    assert len(lines) == len(empty), "a value added or removed a line"
    fences = [i for i, line in enumerate(lines) if re.fullmatch("`{3,}", line)]
    assert len(fences) == 2 and fences[1] - fences[0] == 3 and lines[fences[0]] == lines[fences[1]]
    for number, (got, want) in enumerate(zip(lines, empty, strict=True)):
        if fences[0] < number < fences[1]:
            continue  # pip freeze lines: literal text inside the code block
        assert got.startswith("#") == want.startswith("#"), got
        if want.startswith("|"):
            assert len(cells(got)) == len(cells(want)), got
    assert json.loads(json.dumps(data)) == data


@BOUNDED
@given(value=hostile())
def test_accuracy_report_reads_back_equal(tmp_path, value):
    report = {"model": value, "data": value, "per_label": {value: {"total": 1}}, "samples": [{"raw": value}]}
    path = tmp_path / "report.json"
    accuracy.write_report(path, report)
    assert json.loads(path.read_text(encoding="utf-8")) == report
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]

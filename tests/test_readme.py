"""The README and docs/ stay true: the matrix table is what `invoke matrix --markdown` prints, the
links resolve, and every `invoke ...` and `ascend-llm ...` command they show parses with the real
parsers (tasks.py's Invoke collection, each stage's argparse parser)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from invoke import Collection, Program
from invoke.exceptions import Exit, ParseError

from ascend_stack.commands import matrix_markdown
from ascend_stack.matrix import load_matrix

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "README.md"]
# a stage after these words: `docker run ... $IMAGE sft ...`, `$RUN sft ...`, `invoke run ... -- sft ...`
STAGE_AFTER = ("$IMAGE", "$RUN", "TAG", "IMAGE", "ascend-llm")


def test_readme_matrix_table_matches_the_matrix() -> None:
    readme = (REPO / "README.md").read_text()
    found = re.search(r"<!-- matrix-table:[^\n]*-->\n(.*?)<!-- /matrix-table -->", readme, re.S)
    assert found, "README.md lost its matrix-table markers"
    assert found.group(1) == matrix_markdown(load_matrix(REPO / "matrix.yaml")), (
        "README's matrix table is stale: paste the output of 'invoke matrix --markdown'"
    )


def test_quick_start_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    assert "python3 -m pytest -q" in readme
    assert "python3 -m pytest -q" in (REPO / ".ci/run").read_text()


def test_the_front_page_is_short_and_every_relative_link_resolves() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 160
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://", "mailto:")):
                assert (page.parent / target).exists(), f"{page.relative_to(REPO)} links {target}, which is not there"


def command_lines(page: Path) -> Iterator[tuple[int, str]]:
    """Each shell line of the page's code blocks (bash or unmarked), continuation lines joined; a
    commented-out command (``#  $RUN lora ...``) counts too, other comments are dropped."""
    inside, block, start, pending = False, False, 0, ""
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            inside = not inside
            block = inside and line.strip() in ("```", "```bash", "```sh", "```console")
            continue
        if not block:
            for span in re.findall(r"`((?:invoke|ascend-llm) [^`]+)`", line) if not inside else ():
                yield number, span  # a command in the prose
            continue
        text = re.sub(r"^#\s+(?=(\$RUN|invoke|docker|ascend-llm|hostA\$|hostB\$)\b)", "", line.strip())
        text = re.sub(r"^#\s+(?=--)", "", text) if pending else text  # a commented continuation line
        if not pending:
            start = number
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        whole, pending = pending + text, ""
        if not whole.startswith("#"):
            yield start, re.split(r"\s#\s", whole)[0]


def commands(kind: str) -> list[tuple[str, list[str]]]:
    """``(where, argv)`` of every ``invoke`` (kind "invoke") or stage (kind "stage") command shown."""
    found = []
    for page in PAGES:
        for number, line in command_lines(page):
            line = re.sub(r"^\s*\S+\$ ", "", line)  # "hostA$ invoke ..."
            for part in re.split(r"&&|;|\|(?!\|)", line):
                try:
                    words = shlex.split(part)
                except ValueError:
                    continue
                while ">" in words or ">>" in words:  # a redirection and its file
                    at = words.index(">") if ">" in words else words.index(">>")
                    del words[at : at + 2]
                where = f"{page.relative_to(REPO)}:{number}"
                if kind == "invoke" and words[:1] == ["invoke"]:
                    found.append((where, words[1:]))
                elif kind == "stage":
                    stage = stage_argv(words)
                    if stage:
                        found.append((where, stage))
    return found


def stage_argv(words: list[str]) -> list[str] | None:
    if "--" in words and words[:2] in (["invoke", "run"], ["invoke", "k8s"], ["invoke", "pipeline"]):
        return words[words.index("--") + 1 :]
    if words[:1] == ["invoke"]:
        return None
    for i, word in enumerate(words):
        if word in STAGE_AFTER and i + 1 < len(words) and not words[i + 1].startswith(("-", "$")):
            return words[i + 1 :]
    return None


def invoke_program() -> Program:
    import tasks

    return Program(namespace=Collection.from_module(tasks), name="invoke", binary="invoke")


@pytest.mark.parametrize("where,argv", commands("invoke"), ids=lambda v: v if isinstance(v, str) else "")
def test_every_invoke_command_in_the_docs_parses(where: str, argv: list[str]) -> None:
    if any(w.startswith(("[", "<")) or w in ("...", "..") or "|" in w for w in argv):
        pytest.skip(f"{where}: a synopsis, not a command")
    program = invoke_program()
    if len(argv) == 1 and not argv[0].startswith("-"):  # a task named in the prose: it exists
        assert argv[0] in program.namespace.task_names, f"{where}: invoke has no task {argv[0]}"
        return
    program.argv = ["invoke", *argv]
    try:
        program.create_config()
        program.parse_core(program.argv)
        program.parse_collection()
        program.parse_tasks()
    except (ParseError, Exit) as err:
        pytest.fail(f"{where}: invoke {shlex.join(argv)}: {err}")
    if argv[0] in ("--help", "-h") and len(argv) > 1 and not argv[1].isupper():  # invoke --help build
        assert argv[1] in program.namespace.task_names, f"{where}: invoke has no task {argv[1]}"
    assert program.tasks or argv[0] in ("--list", "-l", "--help", "-h"), f"{where}: names no task"


@pytest.mark.parametrize("where,argv", commands("stage"), ids=lambda v: v if isinstance(v, str) else "")
def test_every_stage_command_in_the_docs_parses(where: str, argv: list[str]) -> None:
    from ascend_llm.cli import STAGES, split_passthrough

    name, *rest = argv
    if name not in STAGES:
        if name in ("pipeline", "bash", "python", "--help", "help", "<stage>", "<command>"):
            return
        pytest.fail(f"{where}: {name} is not a stage of ascend-llm ({', '.join(STAGES)})")
    if any(w.startswith(("[", "<")) or w in ("...", "..") or "|" in w for w in rest):
        pytest.skip(f"{where}: a synopsis, not a command")
    own, _ = split_passthrough(rest)
    try:
        STAGES[name].parser().parse_args(own)
    except SystemExit as exit_:
        if exit_.code == 0:  # --help
            return
        pytest.fail(f"{where}: ascend-llm {name} {shlex.join(rest)}: argparse exited {exit_.code}")


def test_the_docs_show_enough_commands_for_the_checks_to_mean_something() -> None:
    assert len(commands("invoke")) >= 40 and len(commands("stage")) >= 25

"""The README stays true: its matrix table is the one `invoke matrix --markdown` prints."""

from __future__ import annotations

import re
from pathlib import Path

from ascend_stack.commands import matrix_markdown
from ascend_stack.matrix import load_matrix

REPO = Path(__file__).resolve().parents[1]


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

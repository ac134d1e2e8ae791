"""Base layer labels (os, python, arch) agree with the system in the image."""

from __future__ import annotations

from typing import Any

from ascend_stack.verify import os_problem, parse_key_values


def test_os_label_is_the_installed_os(host: Any, labels: dict[str, str]) -> None:
    got = labels.get("io.ascend-llm-stack.os", "")
    problem = os_problem(got, parse_key_values(host.file("/etc/os-release").content_string))
    assert problem is None, f"label os={got}: {problem}"


def test_python_label_is_the_installed_python(host: Any, labels: dict[str, str]) -> None:
    have = host.check_output("python -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'").strip()
    got = labels.get("io.ascend-llm-stack.python")
    assert got == have, f"label python={got}, the image's python is {have}"


def test_arch_label_is_the_installed_arch(host: Any, labels: dict[str, str]) -> None:
    have = host.check_output("uname -m").strip()
    got = labels.get("io.ascend-llm-stack.arch")
    assert got == have, f"label arch={got}, the image runs {have}"

"""Base layer (and so every image): nothing from the build that must not be in an image."""

from __future__ import annotations

from typing import Any

from ascend_stack import render
from ascend_stack.verify import BUILD_ONLY_VARIABLES

# Packages only builder stages install (the Python build, the apex wheel build).
BUILDER_ONLY = {"apt": ("build-essential", "dpkg-dev", "patch"), "rpm": ("patch", "rpm-build")}
PIP_CONFIGS = ("/etc/pip.conf", "/root/.pip/pip.conf", "/root/.config/pip/pip.conf", "/opt/venv/pip.conf")


def _files(host: Any, *paths: str, name: str | None = None) -> list[str]:
    """Regular files under the existing ``paths`` (optionally matching ``name``)."""
    existing = [p for p in paths if host.file(p).exists]
    if not existing:
        return []
    match = f" -name '{name}'" if name else ""
    return host.run(f"find {' '.join(existing)} -xdev -type f{match} 2>/dev/null").stdout.split()


def _package_family(host: Any) -> str:
    return "apt" if host.exists("dpkg-query") else "rpm"


def test_no_cann_installer_is_left(host: Any) -> None:
    out = host.run(r"find / -xdev \( -path /proc -o -path /sys \) -prune -o -type f -name '*.run' -print 2>/dev/null")
    found = out.stdout.split()
    assert not found, f".run installer(s) left in the image: {', '.join(found)}"


def test_no_proxy_or_index_setting_in_the_environment(image_env: dict[str, str]) -> None:
    found = sorted(name for name in BUILD_ONLY_VARIABLES if name in image_env)
    assert not found, f"build-time setting(s) in the image's ENV: {', '.join(f'{n}={image_env[n]}' for n in found)}"


def test_no_proxy_or_index_in_package_manager_config(host: Any) -> None:
    found = [p for p in PIP_CONFIGS if host.file(p).exists]
    grep = host.run(
        "grep -rilE '^[^#/]*(proxy|sslcacert|CAInfo)' /etc/apt/apt.conf /etc/apt/apt.conf.d /etc/dnf/dnf.conf"
        " /etc/yum.conf /root/.gitconfig /etc/gitconfig /root/.curlrc /root/.wgetrc /etc/wgetrc 2>/dev/null"
    )
    found += grep.stdout.split()
    assert not found, f"proxy, index or CA setting(s) from the build left in: {', '.join(found)}"


def test_no_build_secret_or_ca_file_is_left(host: Any) -> None:
    found = _files(host, "/run/secrets", "/usr/local/share/ca-certificates", "/etc/pki/ca-trust/source/anchors")
    assert not found, f"secret or CA file(s) from the build left in the image: {', '.join(found)}"


def test_build_mount_points_are_empty(host: Any) -> None:
    found = _files(host, "/mnt")
    assert not found, f"file(s) left under the build's bind-mount points: {', '.join(found[:10])}"


def test_no_pip_cache(host: Any) -> None:
    home = host.user(render.RuntimeUser.name).home if host.user(render.RuntimeUser.name).exists else "/root"
    found = _files(host, "/root/.cache/pip", "/tmp/pip-cache", f"{home}/.cache/pip")
    assert not found, f"pip cache left in the image: {len(found)} file(s) under {found[0].rsplit('/', 2)[0]}"


def test_no_os_package_cache(host: Any) -> None:
    if _package_family(host) == "apt":
        found = [f for f in _files(host, "/var/lib/apt/lists") if not f.endswith("/lock")]
        found += _files(host, "/var/cache/apt", name="*.deb") + _files(host, "/var/cache/apt", name="*.bin")
    else:
        found = _files(host, "/var/cache/dnf", "/var/cache/yum")
    assert not found, f"OS package lists or caches left: {', '.join(found[:5])}{' ...' if len(found) > 5 else ''}"


def test_no_builder_only_toolchain(host: Any) -> None:
    family = _package_family(host)
    query = (
        "dpkg-query -W -f='${Status}' %s 2>/dev/null | grep -q 'install ok installed'"
        if family == "apt"
        else ("rpm -q %s >/dev/null 2>&1")
    )
    found = [pkg for pkg in BUILDER_ONLY[family] if host.run(query % pkg).rc == 0]
    found += [d for d in ("/tmp/apex", "/tmp/python-build", "/dist") if host.file(d).exists]
    assert not found, f"builder-only tools or build trees in the runtime image: {', '.join(found)}"

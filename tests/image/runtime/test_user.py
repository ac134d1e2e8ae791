"""runtime layer: the image runs as HwHiAiUser, whose home holds the caches, and who may write what the
stages write inside the image, while nothing installed is writable by others."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from ascend_stack import render

USER = render.RuntimeUser.name
# Trees installed by the layers: nothing in them may be writable by others.
INSTALLED = ("/opt", "/usr/local", "/etc", "/home")


@pytest.fixture(scope="session")
def user(labels: dict[str, str]) -> render.RuntimeUser:
    """The user the labels say the image was built with (uid/gid are a build option)."""
    try:
        return render.RuntimeUser(int(labels["io.ascend-llm-stack.uid"]), int(labels["io.ascend-llm-stack.gid"]))
    except (KeyError, ValueError):
        pytest.fail("the image has no io.ascend-llm-stack.uid/gid labels: it was built without its user")


def test_the_image_runs_as_hwhiaiuser(image_config: dict[str, Any], user_host: Any, user: render.RuntimeUser) -> None:
    assert image_config.get("User") == USER, f"the image's USER is {image_config.get('User')!r}, not {USER}"
    ids = user_host.check_output("id -u; id -g").split()
    assert ids == [str(user.uid), str(user.gid)], f"a plain container runs as uid/gid {ids}, not {user.uid}:{user.gid}"


def test_the_user_has_its_passwd_entry_and_home(host: Any, user: render.RuntimeUser) -> None:
    """Tensor-parallel runs fail when the uid has no passwd entry (getpwuid in torch's and HCCL's code)."""
    entry = host.user(USER)
    assert entry.exists, f"no {USER} in /etc/passwd"
    assert (entry.uid, entry.gid, entry.home) == (user.uid, user.gid, user.home), (
        f"{USER} is {entry.uid}:{entry.gid} with home {entry.home}, not {user.uid}:{user.gid} {user.home}"
    )
    assert host.group(USER).gid == user.gid, f"group {USER} has gid {host.group(USER).gid}, not {user.gid}"


def test_caches_resolve_under_the_users_home(
    user_host: Any, user: render.RuntimeUser, image_env: dict[str, str]
) -> None:
    code = "import huggingface_hub.constants as c; print(c.HF_HUB_CACHE)"
    found = {
        "HOME": user_host.check_output("printenv HOME"),
        "pip cache": user_host.check_output("python -m pip cache dir --disable-pip-version-check"),
        "HF cache": user_host.check_output(f"python -c {shlex.quote(code)}"),
        **{name: image_env.get(name, "unset") for name in user.env() if name != "HOME"},
    }
    outside = {k: v for k, v in found.items() if not (v.strip() + "/").startswith(user.home + "/")}
    assert not outside, f"not under {user.home}: " + ", ".join(f"{k}={v.strip()}" for k, v in outside.items())


@pytest.mark.parametrize("path", [*render.RuntimeUser().home_dirs(), *render.STAGE_WRITES])
def test_the_user_may_write_what_the_stages_write(user_host: Any, path: str, user: render.RuntimeUser) -> None:
    """Its home and caches, and inside the image where a stage writes (see render.STAGE_WRITES)."""
    path = path.replace(render.RuntimeUser().home, user.home)
    probe = f"{path}/.ascend-verify-write-probe"
    out = user_host.run(f"touch {shlex.quote(probe)} && rm {shlex.quote(probe)}")
    why = render.STAGE_WRITES.get(path, "its home and caches")
    assert out.rc == 0, f"{USER} cannot write {path} ({why}): {(out.stderr.strip().splitlines() or ['?'])[-1]}"


def test_nothing_installed_is_writable_by_others(host: Any) -> None:
    """World-writable files would let any user of a shared host change the stack; sticky dirs (/tmp) aside."""
    roots = " ".join(INSTALLED)
    out = host.run(f"find {roots} -xdev -perm -0002 ! -type l ! \\( -type d -perm -1000 \\) 2>/dev/null")
    found = out.stdout.split()
    assert not found, f"writable by every user: {', '.join(found[:5])}{' ...' if len(found) > 5 else ''}"

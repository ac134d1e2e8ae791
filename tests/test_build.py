"""The build driver's logic that needs no engine: options, content hashes, secrets, client choice."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ascend_stack import render
from ascend_stack.build import BuildOptions, NetworkOptions, content_hash, content_tag, secret_files
from ascend_stack.driver import BuildRequest, find_buildkit_client
from ascend_stack.errors import UserError
from ascend_stack.matrix import load_matrix
from ascend_stack.target import resolve

REPO = Path(__file__).resolve().parents[1]


def test_build_env_carries_network_settings_only_as_secret_lines(tmp_path: Path) -> None:
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    net = NetworkOptions(ca_cert=ca, http_proxy="http://u:p@proxy:3128", pip_index_url="https://u:t@pypi.corp/simple",
                         apt_mirror="http://mirror.corp/debian", offline=True)  # fmt: skip
    env = net.build_env()
    assert "https_proxy='http://u:p@proxy:3128'\n" in env and "HTTP_PROXY='http://u:p@proxy:3128'\n" in env
    assert "PIP_INDEX_URL='https://u:t@pypi.corp/simple'\n" in env
    assert "PIP_CERT='/run/secrets/ca-cert'\n" in env and "Acquire::https::CAInfo=/run/secrets/ca-cert" in env
    assert "APT_MIRROR='http://mirror.corp/debian'\n" in env and "PIP_NO_INDEX='1'\n" in env
    assert str(ca) not in env  # the file itself is its own secret
    assert NetworkOptions().build_env() == ""


def test_build_env_quotes_for_the_shell() -> None:
    assert NetworkOptions(pip_index_url="https://x/it's").build_env() == "PIP_INDEX_URL='https://x/it'\\''s'\n"


def test_secret_files_are_private_and_removed(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    with secret_files(NetworkOptions(ca_cert=ca, http_proxy="http://p")) as secrets:
        env = secrets["build-env"]
        assert stat.S_IMODE(env.stat().st_mode) == 0o600 and stat.S_IMODE(env.parent.stat().st_mode) == 0o700
        assert secrets["ca-cert"] == ca.resolve()
    assert not env.exists() and not env.parent.exists()


def test_missing_ca_file_is_one_line(tmp_path: Path) -> None:
    with (
        pytest.raises(UserError, match=r"--ca-cert .*nope.pem: no such file"),
        secret_files(NetworkOptions(ca_cert=tmp_path / "nope.pem")),
    ):
        pass


@pytest.mark.parametrize(
    ("kwargs", "selected"),
    [({}, ["base", "cann", "pta", "mindspeed", "runtime"]), ({"until": "pta"}, ["base", "cann", "pta"]),
     ({"layers": ["runtime", "mindspeed"]}, ["mindspeed", "runtime"])],
)  # fmt: skip
def test_layer_selection(kwargs: dict, selected: list[str]) -> None:
    assert BuildOptions(**kwargs).selected() == selected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"until": "torch"}, "unknown layer 'torch' for --until: choose one of base, cann, pta, mindspeed, runtime"),
        ({"layers": ["apex"]}, "unknown layer 'apex' for --layers: choose from base, cann, pta, mindspeed, runtime"),
    ],
)
def test_bad_layer_selection(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError) as info:
        BuildOptions(**kwargs).selected()
    assert str(info.value) == message


def test_content_hash_changes_with_each_thing_it_covers() -> None:
    t = resolve(load_matrix(REPO / "matrix.yaml"), "8.1.RC1", arch="aarch64")
    plan, files = render.plan(t)
    pta = plan.layer("pta")
    base = content_hash(pta, files, ["git:apex:master:aaa"], "sha256:parent", "linux/arm64")
    assert content_hash(pta, dict(files), ["git:apex:master:aaa"], "sha256:parent", "linux/arm64") == base
    assert content_hash(pta, files, ["git:apex:master:bbb"], "sha256:parent", "linux/arm64") != base
    assert content_hash(pta, files, ["git:apex:master:aaa"], "sha256:other", "linux/arm64") != base
    assert content_hash(pta, files, ["git:apex:master:aaa"], "sha256:parent", "linux/amd64") != base
    changed = {**files, "pta/Dockerfile": files["pta/Dockerfile"] + "\n# edit"}
    assert content_hash(pta, changed, ["git:apex:master:aaa"], "sha256:parent", "linux/arm64") != base
    other = {**files, "runtime/Dockerfile": "FROM x"}  # another layer's files do not matter
    assert content_hash(pta, other, ["git:apex:master:aaa"], "sha256:parent", "linux/arm64") == base
    assert content_tag(pta, base) == f"ascend-llm-stack/pta:content-{base[:16]}"


def test_the_users_ids_are_part_of_the_runtime_layers_content_only() -> None:
    """--uid/--gid change the runtime layer's Dockerfile, hence its content hash, and no other layer's."""
    t = resolve(load_matrix(REPO / "matrix.yaml"), "8.1.RC1", arch="aarch64")
    default_plan, default = render.plan(t)
    _, other = render.plan(t, user=render.RuntimeUser(1234, 2345))
    changed = sorted(k for k in default if default[k] != other[k] and k != "plan.json")
    assert changed == ["runtime/Dockerfile"]
    assert "useradd --uid 1234 --gid 2345" in other["runtime/Dockerfile"]
    runtime = default_plan.layer("runtime")
    args = ([], "sha256:parent", "linux/arm64")
    assert content_hash(runtime, default, *args) != content_hash(runtime, other, *args)
    assert runtime.labels["io.ascend-llm-stack.uid"] == "1000" and default_plan.layer("base").labels.get(
        "io.ascend-llm-stack.uid") is None  # fmt: skip


@pytest.mark.parametrize("uid", ["0", "-1", "x", "4294967296"])
def test_a_bad_uid_is_one_line(uid: str) -> None:
    out = subprocess.run([sys.executable, "-m", "invoke", "render", "--cann", "8.1.RC1", "--uid", uid],
                         cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2 and out.stderr.startswith(f"error: --uid {uid}: a ") and out.stderr.count("\n") == 1


def test_build_request_argv_passes_secrets_and_never_proxy_args(tmp_path: Path) -> None:
    req = BuildRequest(context=tmp_path, tags=["a:b"], platform="linux/arm64", build_args={"PARENT_IMAGE": "p:1"},
                       secrets={"build-env": tmp_path / "env"}, labels={"k": "v"})  # fmt: skip
    client = find_buildkit_client([_fake_docker(tmp_path, "20.10.24", buildx=False)])
    argv = req.argv(client, tmp_path / "iid")
    assert argv[:2] == [client.path, "build"] and argv[-1] == str(tmp_path)
    assert f"id=build-env,src={tmp_path / 'env'}" in argv and "PARENT_IMAGE=p:1" in argv
    assert "--platform" in argv and "linux/arm64" in argv and not any("proxy" in a.lower() for a in argv)


def _fake_docker(tmp_path: Path, version: str, buildx: bool) -> str:
    """A stand-in docker CLI answering only the two questions the client probe asks."""
    path = tmp_path / f"docker-{version}-{buildx}"
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = buildx ]; then {"echo buildx v0.12; exit 0" if buildx else "exit 1"}; fi\n'
        f'if [ "$1" = version ]; then echo {version}; fi\n'
    )
    path.chmod(0o755)
    return str(path)


def test_client_choice(tmp_path: Path) -> None:
    new_without_buildx = _fake_docker(tmp_path, "28.2.2", buildx=False)
    old = _fake_docker(tmp_path, "20.10.24", buildx=False)
    new_with_buildx = _fake_docker(tmp_path, "27.0.1", buildx=True)
    assert find_buildkit_client([new_without_buildx, old]).kind == "builtin"
    picked = find_buildkit_client([new_with_buildx, old])
    assert (picked.kind, picked.build_command()[1:]) == ("buildx", ["buildx", "build", "--load"])
    with pytest.raises(UserError, match=r"can build with BuildKit: docker 28.2.2 at .* no buildx"):
        find_buildkit_client([new_without_buildx])


def test_entrypoints_digest_covers_the_package_not_caches(tmp_path: Path) -> None:
    from ascend_stack.build import entrypoints_digest

    (tmp_path / "ascend_llm/presets").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    (tmp_path / "ascend_llm/cli.py").write_text("x = 1\n")
    first = entrypoints_digest(tmp_path)
    (tmp_path / ".ruff_cache").mkdir()
    (tmp_path / ".ruff_cache/x").write_text("cache")
    (tmp_path / "ascend_llm/__pycache__").mkdir()
    (tmp_path / "ascend_llm/__pycache__/cli.pyc").write_text("bytecode")
    assert entrypoints_digest(tmp_path) == first
    (tmp_path / "ascend_llm/presets/qwen3-1b.yaml").write_text("layers: 2\n")
    assert entrypoints_digest(tmp_path) != first


def test_entrypoints_wheel_is_built_from_the_package(tmp_path: Path) -> None:
    import zipfile

    from ascend_stack.build import build_entrypoints_wheel

    wheel = build_entrypoints_wheel(tmp_path / "ctx")
    names = zipfile.ZipFile(wheel).namelist()
    assert wheel.name.startswith("ascend_llm-") and "ascend_llm/cli.py" in names
    assert any(n.startswith("ascend_llm/presets/") and n.endswith(".yaml") for n in names)
    assert "ascend_llm/releases/2.1.0.yaml" in names, "the release tables are package data too"
    assert not (REPO / "entrypoints/build").exists()


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_cli_offline_missing_inputs_exit_non_zero_without_traceback(tmp_path: Path, dry_run: list[str]) -> None:
    """Checked before any engine is contacted: this runs the same with or without Docker, and a dry run
    fails like the build would (it used to print the list and exit 0)."""
    out = subprocess.run(
        [sys.executable, "-m", "invoke", "build", "--cann", "test", "--arch", "x86_64", "--offline",
         "--packages", str(tmp_path / "empty"), "--lock-dir", str(tmp_path / "locks"), *dry_run],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2
    assert "Ascend-cann-toolkit_8.2.RC1_linux-x86_64.run" in out.stderr and "Traceback" not in out.stderr


def test_a_build_refuses_an_nvidia_apex_that_apex_build_sh_does_not_name(tmp_path: Path, megatron_core: Path) -> None:
    """Before Docker runs: Ascend apex's patch applies to the NVIDIA commit its build.sh checks out only."""
    from fakes.sources import add_commit, make_source_repos

    from ascend_stack.build import check_apex_pair
    from ascend_stack.inputs import InputDirs, resolve_inputs

    repos = make_source_repos(tmp_path / "upstream", megatron_core)
    target = resolve(load_matrix(REPO / "matrix.yaml"), "test", arch="x86_64")
    plan, _ = render.plan(target)
    git_only = render.BuildPlan(plan.target, plan.image, plan.platform,
                                [render.Layer(**{**vars(layer), "inputs": [i for i in layer.inputs if i.kind == "git"]})
                                 for layer in plan.layers])  # fmt: skip
    dirs = InputDirs.under(tmp_path, source_overrides=tmp_path / "upstream")
    resolved = resolve_inputs(git_only, dirs, download=False, offline=True, progress=False)
    check_apex_pair(resolved)  # the stand-ins agree, as upstream's do
    moved = add_commit(repos["nvidia-apex"], "master", "README.md", "a later NVIDIA apex\n")
    (tmp_path / "locks").joinpath("test.yaml").unlink()
    resolved = resolve_inputs(git_only, dirs, download=False, offline=True, progress=False)
    with pytest.raises(UserError) as info:
        check_apex_pair(resolved)
    assert f"but the build has {moved}: set nvidia_apex.commit" in str(info.value)


def test_a_layers_wheelhouse_holds_only_what_its_lock_pins(tmp_path: Path) -> None:
    """A build context is sent to BuildKit whole: torch's wheels stay out of the layers that do not install them."""
    from ascend_stack.build import locked_files

    first, second = tmp_path / "user", tmp_path / "project"
    torch = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    others = [
        "numpy-1.26.4.tar.gz",
        "Jinja2-3.1.6-py3-none-any.whl",
        "not-a-wheel.whl",
        "six-1.17.0-py2.py3-none-any.whl",
    ]
    for house, names in ((first, [torch, "README"]), (second, [torch, *others])):
        house.mkdir()
        for name in names:
            (house / name).write_text(name)

    def lock(*pins: str) -> str:
        return "".join(f"{pin} \\\n    --hash=sha256:{i:064x}\n" for i, pin in enumerate(pins))

    pta, base = lock("torch==2.13.0+cpu", "jinja2==3.1.6"), lock("numpy==1.26.4", "six==1.16.0")
    assert locked_files([pta], [first, second]) == [first / torch, second / "Jinja2-3.1.6-py3-none-any.whl"]
    assert locked_files([base], [first, second]) == [second / "numpy-1.26.4.tar.gz"]  # six: another version
    assert locked_files(["# locked: no new packages in this layer\n"], [first, second]) == []
    # pta's two sections pin setuptools twice (torch's, and apex-build's <=65.7.0): an offline build needs both
    tools = ["setuptools-81.0.0-py3-none-any.whl", "setuptools-65.7.0-py3-none-any.whl"]
    for name in tools:
        (second / name).write_text(name)
    both = locked_files([lock("setuptools==81.0.0"), lock("setuptools==65.7.0")], [first, second])
    assert sorted(both) == sorted(second / name for name in tools)


def test_the_locked_wheels_a_context_holds_are_listed_for_the_no_index_install(tmp_path: Path) -> None:
    """pip takes the index's copy of a file over the wheelhouse's when both carry the hash, so a
    layer installs what its context holds first, with --no-index: each lock's ``.local`` lists
    exactly the locked packages whose wheel (not sdist) is in the context, with their hashes."""
    from ascend_stack import pylock
    from ascend_stack.build import Builder
    from ascend_stack.inputs import InputDirs, ResolvedInputs
    from ascend_stack.lock import Lock

    target = resolve(load_matrix(REPO / "matrix.yaml"), "test", arch="x86_64")
    lock = pylock.PyLock.load(pylock.lock_path(target))
    assert lock is not None
    (name, version), (other, other_version) = list(pylock.pins_of(lock.sections["mindspeed"]).items())[:2]
    dirs = InputDirs.under(tmp_path)
    dirs.wheelhouse.mkdir()
    (dirs.wheelhouse / f"{name.replace('-', '_')}-{version}-py3-none-any.whl").write_text("a locked wheel")
    (dirs.wheelhouse / f"{other.replace('-', '_')}-{other_version}.tar.gz").write_text("a locked sdist")
    plan, files = render.plan(target, {}, lock)
    mindspeed = next(layer for layer in plan.layers if layer.name == "mindspeed")
    (tmp_path / "ctx").mkdir()
    Builder(target, BuildOptions(dirs=dirs), None)._assemble(
        mindspeed, tmp_path / "ctx", ResolvedInputs({}, Lock.load("test", dirs.locks)), files
    )
    local = (tmp_path / "ctx" / "wheelhouse" / "requirements.lock.local").read_text()
    assert local.startswith(f"{name}=={version} ") and "--hash=sha256:" in local
    assert local.count("==") == 1, "the sdist is left to the locked install"
    assert (tmp_path / "ctx" / "wheelhouse" / "runtime.lock.local").read_text() == ""
    rendered = files["mindspeed/Dockerfile"]
    assert "--no-index --no-deps --find-links /mnt/wheelhouse" in rendered
    assert "-r /mnt/wheelhouse/requirements.lock.local" in rendered


def test_context_paths_are_what_the_dockerfile_reads_from_its_context() -> None:
    from ascend_stack.build import context_paths

    m = load_matrix(REPO / "matrix.yaml")
    plan, files = render.plan(resolve(m, "test", arch="x86_64"))
    paths = {layer.name: context_paths(files[layer.dockerfile]) for layer in plan.layers}
    assert paths["cann"] == ["packages"]
    assert {"wheelhouse", "requirements.lock", "apex-build.lock", "sources/apex", "sources/nvidia-apex"} <= set(
        paths["pta"]
    )
    assert {"sources/mindspeed", "sources/mindspeed-llm", "stack.json"} <= set(paths["mindspeed"])
    assert paths["runtime"] == ["entrypoints"]
    assert (
        context_paths("FROM x AS a\nCOPY --from=a /dist /dist\nRUN --mount=type=bind,from=a,source=/d,target=/d true\n")
        == []
    )


class _Container:
    """What Driver.run_capture asks of a docker SDK container; ``start`` fails as an engine without its
    bridge does, or the command exits ``status``."""

    def __init__(self, start_error: Exception | None, status: int) -> None:
        self.start_error, self.status, self.removed = start_error, status, False

    def start(self) -> None:
        if self.start_error:
            raise self.start_error

    def wait(self) -> dict:
        return {"StatusCode": self.status}

    def logs(self, stdout: bool, stderr: bool) -> bytes:
        return b'{"PATH": "/x"}' if stdout else b"capture-env.py: no set_env.sh"

    def remove(self, force: bool) -> None:
        self.removed = force


@pytest.mark.parametrize("start_error,status", [(None, 0), (None, 3), ("no bridge", 0)])
def test_the_capture_container_has_no_network_and_never_outlives_the_call(start_error, status) -> None:
    import docker.errors

    from ascend_stack.driver import BuildFailed, Driver

    error = docker.errors.APIError("500", explanation="could not find bridge docker0") if start_error else None
    container, created = _Container(error, status), {}

    class Containers:
        def create(self, image: str, command: list[str], **kwargs: object) -> _Container:
            created.update(kwargs)
            return container

    driver = Driver(None, type("Docker", (), {"containers": Containers()})())  # type: ignore[arg-type]
    argv = ["python", "/mnt/ctx/capture-env.py"]
    if start_error or status:
        with pytest.raises(BuildFailed, match="could not find bridge docker0" if start_error else r"exit 3\): capture"):
            driver.run_capture("img:install", argv, {Path("/ctx"): "/mnt/ctx"}, "linux/amd64")
    else:
        assert driver.run_capture("img:install", argv, {Path("/ctx"): "/mnt/ctx"}, "linux/amd64") == '{"PATH": "/x"}'
    assert created["network_mode"] == "none" and container.removed

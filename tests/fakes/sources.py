"""Stand-in git repositories for MindSpeed, MindSpeed-LLM, Megatron-LM, Ascend apex and NVIDIA apex.

**These are not the upstream projects** (except ``megatron/core``, see below). The machines of this
project cannot reach gitee, gitcode or GitHub, so the integration tests build the ``mindspeed`` and
``pta`` layers from these small repositories. They are real git repositories with deterministic commit
ids (fixed identities and dates, no user configuration), and they model exactly the behaviours of the
real repositories that our Dockerfiles, the builder and the stage runner depend on. Each was checked
against the real repository at the commit the seed row pins (Ascend/MindSpeed 2c085cc9, Ascend/MindSpeed-LLM
v2.1.0, NVIDIA/Megatron-LM core_r0.8.0, Ascend/apex 49a7994, NVIDIA/apex 4ef930c1) in a session with
their snapshots; what they model:

``mindspeed`` (branch ``master``)
    ``setup.py`` (setuptools, package ``mindspeed`` 0.8.0) that, **like the real one, runs
    ``sys.executable -m pip install -r requirements.txt`` at import time unless ``CI_BUILD=1``** (so an
    install without CI_BUILD escapes the build's constraints, and fails where pip is not importable, as
    inside an isolated build environment); ``mindspeed/__init__.py``; ``mindspeed/megatron_adaptor.py``
    (imports ``megatron.core`` as the real one needs Megatron); ``requirements.txt`` with two small
    pure-Python PyPI packages (the real list is 22 packages, gpytorch and scikit-learn among them).
``mindspeed-llm`` (branch ``2.1.0``, tag ``v2.1.0`` on an earlier commit of it, like upstream)
    The entry scripts at the root (``convert_ckpt.py``, ``preprocess_data.py``, ``pretrain_gpt.py``,
    ``posttrain_gpt.py``, ``inference.py``, ``evaluation.py``, ``pretrain_mamba.py``). Each imports
    ``mindspeed_llm.tasks.megatron_adaptor`` (hence MindSpeed and the copied-in ``megatron/``, as upstream)
    and prints one JSON line: ``{"stand_in": "MindSpeed-LLM", "script": ..., "purpose": ..., "argv": [...],
    "megatron": "0.8.0", "megatron_dir": <path of megatron/>, "mindspeed": "0.8.0", "rank": $RANK,
    "world_size": $WORLD_SIZE}``. Also ``mindspeed_llm/``, ``configs/``, ``examples/mcore/qwen3/*.sh``
    launchers and a ``requirements.txt`` with the real v2.1.0 pins that decide how pip resolves the layer
    (``numpy>=1.19.2,<2.0.0``, ``transformers==4.43.2`` — replaced by the row's pin afterwards, as the
    guide says —, ``datasets>=2.16.0``, which brings pyarrow), plus small pure-Python ones, among them
    ``word2number``, which PyPI has **only as an sdist** (so are upstream's ``antlr4-python3-runtime``
    and ``transformers_stream_generator``: a lock and a wheelhouse must handle one); the heavy rest of
    the real list (ray, peft, bitsandbytes-npu-beta, tiktoken, ...) is left out.
``megatron`` (branch ``core_r0.8.0``)
    ``megatron/core`` is **the real package**: the Python files of PyPI's ``megatron-core`` 0.8.0 wheel
    (the ``megatron/core`` of Megatron-LM core_r0.8.0; its compiled dataset helper is left out, the
    source tree has none either), so ``import megatron.core`` in a CI image is a real import of real code,
    including ``tensor_parallel/random.py``'s ``from pkg_resources import packaging``. ``megatron/training``,
    ``megatron/legacy`` and ``megatron/inference`` are stand-ins (MindSpeed-LLM needs the whole tree; the
    wheel has ``megatron/core`` alone).
``apex`` (Ascend's, branch ``master``)
    ``patch/npu.patch`` (a unified diff that ``patch -p1`` applies to the ``nvidia-apex`` stand-in; like
    the real patch at 49a7994 it sets the version to ``0.1-ascend`` — not PEP 440, so it needs the
    setuptools<=65.7 the real build uses — and handles ``--cpp_ext`` only: ``--npu_float_status`` is
    rejected by setuptools, as upstream), ``src/apex/...`` (NPU fused optimizers), ``tests/`` and
    ``scripts/build.sh``, which like the real one checks out NVIDIA apex at a commit and runs
    ``setup.py --cpp_ext bdist_wheel`` (the pta layer reads both from it).
``nvidia-apex`` (branch ``master``)
    ``setup.py`` that strips its ``--cpp_ext`` flag from ``sys.argv`` before calling setuptools (the real
    one compiles ``apex_C`` then); package ``apex`` 0.1; ``csrc/``, ``tests/``.

What they do not imitate: no code of the upstream projects is here but megatron-core's. Nothing patches
Megatron, trains, converts or evaluates; no C++ or CUDA/NPU extension is compiled (a requested extension
only makes the wheel platform-specific, as the real one is); torch is not imported by ``setup.py`` or by
the entry scripts (the real apex setup.py and every real entry script import it).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["MEGATRON_CORE", "REPOS", "add_commit", "make_source_repos", "megatron_core_wheel", "nvidia_apex_setup_py"]

REPOS = ("mindspeed", "mindspeed-llm", "megatron", "apex", "nvidia-apex")

# PyPI's megatron-core 0.8.0 (Megatron-LM core_r0.8.0's megatron/core): file name and the sha256 PyPI
# publishes for it. Only its Python files are used, so the cp311 x86_64 build serves every target.
MEGATRON_CORE = (
    "megatron_core-0.8.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    "2f9201f55044ec95c9e4f0ce2b66eef6ea40665b6883fd72a0bfe59862051ff2",
)

_BASE_TIME = 1735689600  # 2025-01-01T00:00:00Z; commit n of a repository is n hours later
_NAME = "ascend-llm-stack test fixtures"
_EMAIL = "fakes@ascend-llm-stack.invalid"


def _git_env(when: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    date = f"@{when} +0000"
    env.update(
        GIT_AUTHOR_NAME=_NAME,
        GIT_AUTHOR_EMAIL=_EMAIL,
        GIT_AUTHOR_DATE=date,
        GIT_COMMITTER_NAME=_NAME,
        GIT_COMMITTER_EMAIL=_EMAIL,
        GIT_COMMITTER_DATE=date,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        LC_ALL="C",
        TZ="UTC",
    )
    return env


def _git(
    repo: Path, *args: str, when: int = _BASE_TIME, stdin: str | None = None, extra_env: dict[str, str] | None = None
) -> str:
    env = _git_env(when)
    if extra_env:
        env.update(extra_env)
    cmd = ["git", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", "-c", "core.autocrlf=false", *args]
    out = subprocess.run(cmd, cwd=repo, env=env, input=stdin, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {out.stderr.strip()}")
    return out.stdout.strip()


class _Repo:
    def __init__(self, path: Path, branch: str) -> None:
        if path.exists() and any(path.iterdir()):
            raise FileExistsError(f"{path} exists and is not empty")
        path.mkdir(parents=True, exist_ok=True)
        self.path, self.commits = path, 0
        _git(path, "init", "-q", "--template=", "-b", branch)

    def commit(self, files: dict[str, str | bytes], message: str, executable: tuple[str, ...] = ()) -> str:
        for rel, text in files.items():
            f = self.path / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(text, bytes):
                f.write_bytes(text)
            else:
                f.write_text(text, encoding="utf-8", newline="\n")
            f.chmod(0o755 if rel in executable or rel.endswith(".sh") else 0o644)
        when = _BASE_TIME + 3600 * self.commits
        self.commits += 1
        _git(self.path, "add", "-A", when=when)
        _git(self.path, "commit", "-q", "--no-verify", "-m", message, when=when)
        return _git(self.path, "rev-parse", "HEAD")

    def tag(self, name: str, ref: str, message: str) -> None:
        _git(self.path, "tag", "-a", name, "-m", message, ref, when=_BASE_TIME + 3600 * self.commits)


def megatron_core_wheel(cache: Path) -> Path:
    """PyPI's megatron-core 0.8.0 wheel in ``cache`` (downloaded once with pip), checked against PyPI's sha256."""
    name, sha256 = MEGATRON_CORE
    wheel = Path(cache) / name
    if not wheel.is_file():
        Path(cache).mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "-d", str(cache),
             "megatron-core==0.8.0"],
            capture_output=True, text=True,
        )  # fmt: skip
        if out.returncode != 0 or not wheel.is_file():
            raise RuntimeError(f"cannot download megatron-core 0.8.0 from PyPI: {out.stderr.strip()[-300:]}")
    got = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if got != sha256:
        raise RuntimeError(f"{wheel}: sha256 {got}, PyPI publishes {sha256}")
    return wheel


def make_source_repos(dest: Path, megatron_core: Path) -> dict[str, Path]:
    """Create the five stand-in repositories under ``dest`` (``dest/<name>``); see the module docstring.

    ``megatron_core`` is PyPI's megatron-core 0.8.0 wheel (:func:`megatron_core_wheel`), whose Python
    files become the Megatron stand-in's ``megatron/core``. Returns ``{name: path}`` for ``mindspeed``,
    ``mindspeed-llm``, ``megatron``, ``apex``, ``nvidia-apex``. Each is a non-bare repository with its
    branch checked out; the same call gives the same commit ids.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paths = {name: dest / name for name in REPOS}
    _make_mindspeed(paths["mindspeed"])
    _make_mindspeed_llm(paths["mindspeed-llm"])
    _make_megatron(paths["megatron"], Path(megatron_core))
    nvidia = _make_nvidia_apex(paths["nvidia-apex"])
    _make_ascend_apex(paths["apex"], nvidia)
    return paths


def add_commit(repo: Path, branch: str, path: str, text: str) -> str:
    """Commit ``text`` as ``path`` on ``branch`` of a stand-in repository; return the new commit id.

    A ``branch`` that does not exist yet is created from the checked-out commit (``HEAD``). The commit is
    dated one hour after its parent (so ids stay deterministic). Other branches and tags do not move. When
    ``branch`` is the checked-out branch, the work tree is reset to the new commit.
    """
    repo = Path(repo)
    exists = subprocess.run(["git", "show-ref", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=repo)
    start = f"refs/heads/{branch}" if exists.returncode == 0 else "HEAD"
    parent = _git(repo, "rev-parse", "--verify", f"{start}^{{commit}}")
    when = int(_git(repo, "log", "-1", "--format=%ct", parent)) + 3600
    listing = _git(repo, "ls-tree", parent, "--", path)
    mode = listing.split()[0] if listing else "100644"
    blob = _git(repo, "hash-object", "-w", "--stdin", stdin=text)
    with tempfile.TemporaryDirectory() as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(repo, "read-tree", parent, extra_env=index)
        _git(repo, "update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", extra_env=index)
        tree = _git(repo, "write-tree", extra_env=index)
    commit = _git(repo, "commit-tree", tree, "-p", parent, "-m", f"Update {path}", when=when)
    _git(repo, "update-ref", f"refs/heads/{branch}", commit, parent if exists.returncode == 0 else "")
    head = subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=repo, capture_output=True, text=True)
    if head.stdout.strip() == f"refs/heads/{branch}" and _git(repo, "rev-parse", "--is-bare-repository") == "false":
        _git(repo, "reset", "-q", "--hard", commit)
    return commit


# --------------------------------------------------------------------------------------------------------
# MindSpeed

_STAND_IN = "Stand-in for {what} (ascend-llm-stack tests/fakes): not the upstream code."


def _readme(what: str, more: str = "") -> str:
    return f"# {what} (stand-in)\n\n{_STAND_IN.format(what=what)}\n{more}"


def _make_mindspeed(path: Path) -> None:
    repo = _Repo(path, "master")
    doc = _STAND_IN.format(what="MindSpeed")
    files = {
        "README.md": _readme("MindSpeed", "\nInstall: `pip install -r requirements.txt && pip install -e .`\n"),
        "requirements.txt": "einops\nsix\n",
        "setup.py": (
            f'"""{doc}\n\nLike the real setup.py it installs its requirements itself unless CI_BUILD=1."""\n\n'
            "import os\n"
            "import subprocess\n"
            "import sys\n\n"
            "import setuptools\n\n"
            "if os.getenv('CI_BUILD', '0') != '1':\n"
            "    subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-r', 'requirements.txt'])\n\n"
            "setuptools.setup(\n"
            '    name="mindspeed",\n'
            '    version="0.8.0",\n'
            '    description="MindSpeed stand-in for offline image builds",\n'
            '    packages=setuptools.find_packages(include=["mindspeed", "mindspeed.*"]),\n'
            '    python_requires=">=3.8",\n'
            ")\n"
        ),
        "mindspeed/__init__.py": f'"""{doc}"""\n\n__version__ = "0.8.0"\n',
        "mindspeed/megatron_adaptor.py": (
            f'"""{_STAND_IN.format(what="mindspeed/megatron_adaptor.py")}\n\n'
            "Importing it is how Megatron scripts enable MindSpeed. Like the real module it needs an importable\n"
            'Megatron; it patches nothing.\n"""\n\n'
            "import megatron.core  # noqa: F401\n\n"
            "ADAPTED = True\n"
        ),
    }
    repo.commit(files, "MindSpeed stand-in: core_r0.8.0 adaptor")


# --------------------------------------------------------------------------------------------------------
# MindSpeed-LLM

_ENTRY_SCRIPTS = {
    "convert_ckpt.py": "weight conversion (HF <-> mcore, LoRA merge)",
    "preprocess_data.py": "data preprocessing",
    "pretrain_gpt.py": "pretraining",
    "posttrain_gpt.py": "post-training (--stage sft, LoRA, ...)",
    "inference.py": "inference",
    "evaluation.py": "evaluation",
    "pretrain_mamba.py": "Mamba pretraining",
}

_LLM_RUNNER = '''\
"""{doc}

What every stand-in entry script does: load the adaptor as the real scripts do (so MindSpeed and the
copied-in ``megatron/`` must be importable), then print one JSON line describing the call.
"""

import json
import os
import sys


def run(script: str, purpose: str) -> int:
    from mindspeed_llm.tasks import megatron_adaptor

    record = {{
        "stand_in": "MindSpeed-LLM",
        "script": script,
        "purpose": purpose,
        "argv": sys.argv[1:],
        "megatron": megatron_adaptor.MEGATRON_VERSION,
        "megatron_dir": megatron_adaptor.MEGATRON_DIR,
        "mindspeed": megatron_adaptor.MINDSPEED_VERSION,
        "rank": os.environ.get("RANK"),
        "world_size": os.environ.get("WORLD_SIZE"),
    }}
    print(json.dumps(record, sort_keys=True), flush=True)
    return 0
'''

_LLM_ADAPTOR = '''\
"""{doc}

Like the real module it imports MindSpeed's adaptor and Megatron, including ``megatron.training`` and
``megatron.legacy`` that only the ``megatron/`` directory copied into the MindSpeed-LLM root has (the
megatron-core wheel has ``megatron/core`` alone); it patches nothing and does not import torch.
"""

import os

import megatron.legacy  # noqa: F401
import megatron.training
import mindspeed
import mindspeed.megatron_adaptor  # noqa: F401
from megatron.core import package_info

MEGATRON_VERSION = package_info.__version__
MEGATRON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(megatron.training.__file__)))
MINDSPEED_VERSION = mindspeed.__version__
'''

_QWEN3_MODEL_ARGS = (
    "--use-mcore-models --spec mindspeed_llm.tasks.models.spec.qwen3_spec layer_spec --num-layers 40 "
    "--hidden-size 5120 --ffn-hidden-size 17408 --num-attention-heads 40 --group-query-attention "
    "--num-query-groups 8 --kv-channels 128 --qk-layernorm --seq-length 4096 --max-position-embeddings 40960 "
    "--padded-vocab-size 151936 --make-vocab-size-divisible-by 1 --rotary-base 1000000 "
    "--position-embedding-type rope --normalization RMSNorm --norm-epsilon 1e-6 --swiglu "
    "--disable-bias-linear --untie-embeddings-and-output-weights --tokenizer-type PretrainedFromHF --bf16"
)


def _launcher(script: str, entry: str, args: str, torchrun: bool = True) -> str:
    head = (
        "#!/bin/bash\n"
        f"# {_STAND_IN.format(what='MindSpeed-LLM example ' + script)}\n"
        "# Same shape as upstream: set the variables, then one launch of an entry script at the repo root.\n"
        "export CUDA_DEVICE_MAX_CONNECTIONS=1\n"
        "export PYTORCH_NPU_ALLOC_CONF=expandable_segments:True\n"
    )
    if not torchrun:
        return head + f"python {entry} {args}\n"
    return head + (
        "NPUS_PER_NODE=8\nMASTER_ADDR=localhost\nMASTER_PORT=6000\nNNODES=1\nNODE_RANK=0\n"
        'TOKENIZER_PATH="your tokenizer path"\nCKPT_LOAD_DIR="your model ckpt path"\n'
        'DISTRIBUTED_ARGS="--nproc_per_node $NPUS_PER_NODE --nnodes $NNODES --node_rank $NODE_RANK '
        '--master_addr $MASTER_ADDR --master_port $MASTER_PORT"\n\n'
        f"torchrun $DISTRIBUTED_ARGS {entry} \\\n"
        f"    {_QWEN3_MODEL_ARGS} \\\n"
        f"    --tokenizer-name-or-path ${{TOKENIZER_PATH}} --load ${{CKPT_LOAD_DIR}} {args} \\\n"
        "    --distributed-backend nccl \\\n"
        f"    | tee logs/{script[:-3]}.log\n"
    )


def _make_mindspeed_llm(path: Path) -> None:
    repo = _Repo(path, "2.1.0")
    doc = _STAND_IN.format(what="MindSpeed-LLM")
    files = {
        "README.md": _readme(
            "MindSpeed-LLM",
            "\nEntry scripts live at the root. Copy Megatron-LM core_r0.8.0's `megatron/` here and\n"
            "`pip install -r requirements.txt` (MindSpeed installed separately).\n",
        ),
        "requirements.txt": (
            "numpy>=1.19.2,<2.0.0\ntransformers==4.43.2\ndatasets>=2.16.0\neinops\nsix\ncodetiming\nword2number\n"
        ),
        "mindspeed_llm/__init__.py": f'"""{doc}"""\n',
        "mindspeed_llm/_standin.py": _LLM_RUNNER.format(doc=doc),
        "mindspeed_llm/tasks/__init__.py": f'"""{doc}"""\n',
        "mindspeed_llm/tasks/megatron_adaptor.py": _LLM_ADAPTOR.format(
            doc=_STAND_IN.format(what="mindspeed_llm/tasks/megatron_adaptor.py")
        ),
        "configs/finetune/templates.json": '[\n  {"name": "qwen", "stand_in": true}\n]\n',
        "configs/checkpoint/model_cfg.json": '{\n  "model_mappings": {"qwen3": {"stand_in": true}}\n}\n',
        "examples/mcore/qwen3/pretrain_qwen3_14b_4K_ptd.sh": _launcher(
            "pretrain_qwen3_14b_4K_ptd.sh",
            "pretrain_gpt.py",
            "--tensor-model-parallel-size 4 --pipeline-model-parallel-size 2 --micro-batch-size 1 "
            "--global-batch-size 128 --train-iters 2000 --data-path ${DATA_PATH} --save ${CKPT_SAVE_DIR}",
        ),
        "examples/mcore/qwen3/tune_qwen3_14b_4K_full_ptd.sh": _launcher(
            "tune_qwen3_14b_4K_full_ptd.sh",
            "posttrain_gpt.py",
            "--tensor-model-parallel-size 8 --finetune --stage sft --is-instruction-dataset "
            "--prompt-type qwen --data-path ${DATA_PATH} --save ${CKPT_SAVE_DIR}",
        ),
        "examples/mcore/qwen3/generate_qwen3_14b_ptd.sh": _launcher(
            "generate_qwen3_14b_ptd.sh", "inference.py", "--tensor-model-parallel-size 4 --max-new-tokens 256"
        ),
        "examples/mcore/qwen3/evaluate_qwen3_14b_ptd.sh": _launcher(
            "evaluate_qwen3_14b_ptd.sh",
            "evaluation.py",
            "--tensor-model-parallel-size 2 --task mmlu --task-data-path ${DATA_PATH} --max-new-tokens 2",
        ),
        "examples/mcore/qwen3/ckpt_convert_qwen3_hf2mcore.sh": _launcher(
            "ckpt_convert_qwen3_hf2mcore.sh",
            "convert_ckpt.py",
            "--use-mcore-models --model-type GPT --load-model-type hf --save-model-type mg "
            "--target-tensor-parallel-size 1 --target-pipeline-parallel-size 8 --model-type-hf qwen3 "
            "--params-dtype bf16 --load-dir ./model_from_hf/qwen3_hf/ --save-dir ./model_weights/qwen3_mcore/ "
            "--tokenizer-model ./model_from_hf/qwen3_hf/tokenizer.json",
            torchrun=False,
        ),
        "examples/mcore/qwen3/data_convert_qwen3_pretrain.sh": _launcher(
            "data_convert_qwen3_pretrain.sh",
            "./preprocess_data.py",
            "--input ./dataset/train.parquet --tokenizer-name-or-path ./model_from_hf/qwen3_hf/ "
            "--tokenizer-type PretrainedFromHF --handler-name GeneralPretrainHandler "
            "--output-prefix ./finetune_dataset/alpaca --json-keys text --workers 4 --log-interval 1000",
            torchrun=False,
        ),
    }
    for script, purpose in _ENTRY_SCRIPTS.items():
        files[script] = (
            f'"""{_STAND_IN.format(what="MindSpeed-LLM " + script)} Entry point for {purpose}."""\n\n'
            "import sys\n\n"
            "from mindspeed_llm._standin import run\n\n"
            'if __name__ == "__main__":\n'
            f'    sys.exit(run("{script}", "{purpose}"))\n'
        )
    first = repo.commit(files, "MindSpeed-LLM stand-in 2.1.0 release")
    repo.tag("v2.1.0", first, "MindSpeed-LLM 2.1.0 (stand-in)")
    # Upstream's branch 2.1.0 went on after the tag; so does the stand-in's.
    repo.commit(
        {"docs/release_notes.md": "# 2.1.0 (stand-in)\n\nFixes after the v2.1.0 tag.\n"},
        "MindSpeed-LLM stand-in: fixes after v2.1.0",
    )


# --------------------------------------------------------------------------------------------------------
# Megatron-LM


def _megatron_core_files(wheel: Path) -> dict[str, str | bytes]:
    """``megatron/core/**`` of the wheel: everything but compiled code (the source tree has none)."""
    out: dict[str, str | bytes] = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            if name.startswith("megatron/core/") and not name.endswith("/") and not name.endswith(".so"):
                out[name] = zf.read(name)
    if "megatron/core/package_info.py" not in out:
        raise RuntimeError(f"{wheel} has no megatron/core/package_info.py: not a megatron-core wheel")
    return out


def _make_megatron(path: Path, megatron_core: Path) -> None:
    repo = _Repo(path, "core_r0.8.0")
    doc = _STAND_IN.format(what="Megatron-LM core_r0.8.0")
    files: dict[str, str | bytes] = {
        "README.md": _readme(
            "Megatron-LM core_r0.8.0",
            "\n`megatron/core` is the real megatron-core 0.8.0 from PyPI; the rest of `megatron/` is a stand-in.\n"
            "MindSpeed-LLM copies `megatron/` into its root.\n",
        ),
        **_megatron_core_files(megatron_core),
        "megatron/training/__init__.py": (
            f'"""{doc}"""\n\n\ndef get_args():\n    """The real one returns the parsed global arguments."""\n'
            "    return None\n"
        ),
        "megatron/legacy/__init__.py": f'"""{doc}"""\n',
        "megatron/inference/__init__.py": f'"""{doc}"""\n',
    }
    repo.commit(files, "Megatron-LM stand-in: core_r0.8.0 (megatron/core from megatron-core 0.8.0)")


# --------------------------------------------------------------------------------------------------------
# NVIDIA apex and Ascend apex


def nvidia_apex_setup_py(patched: bool) -> str:
    """NVIDIA apex's stand-in ``setup.py``, before or after Ascend's ``patch/npu.patch``."""
    doc = _STAND_IN.format(what="NVIDIA apex's setup.py")
    lines = [
        f'"""{doc}',
        "",
        "Custom flags are removed from sys.argv before setuptools sees them, as in the real file. A requested",
        "C++ extension is not compiled here; it only makes the wheel platform-specific, like the real one.",
        '"""',
        "",
        "import sys",
        "",
        "from setuptools import find_packages, setup",
        "from setuptools.dist import Distribution",
        "",
        "ext_modules = []",
        "",
        'if "--cpp_ext" in sys.argv:',
        '    sys.argv.remove("--cpp_ext")',
        '    ext_modules.append("apex_C")',
        "",
    ]
    if patched:
        lines += [
            "# Ascend apex 49a7994's patch adds the change_data_ptr extension to --cpp_ext; it knows no other flag.",
            'if "apex_C" in ext_modules:',
            '    ext_modules.append("change_data_ptr")',
            "",
        ]
    lines += [
        "",
        "class BinaryDistribution(Distribution):",
        "    def has_ext_modules(self):",
        "        return bool(ext_modules)",
        "",
        "",
        "setup(",
        '    name="apex",',
        f'    version="{"0.1-ascend" if patched else "0.1"}",',
        '    packages=find_packages(exclude=("build", "csrc", "include", "tests", "dist", "docs", "examples")),',
        '    description="PyTorch Extensions written by NVIDIA (stand-in)",',
        "    distclass=BinaryDistribution,",
        ")",
    ]
    return "\n".join(lines) + "\n"


_APEX_INIT = '"""{doc}"""\n\n__all__ = ["amp", "optimizers"]\n'
_APEX_INIT_PATCHED = '"""{doc}"""\n\n__all__ = ["amp", "optimizers"]\n\nNPU = True  # added by Ascend\'s npu.patch\n'
_OPTIM_INIT = '"""{doc}"""\n\nfrom .fused_adam import FusedAdam  # noqa: F401\n'
_OPTIM_INIT_PATCHED = (
    '"""{doc}"""\n\nfrom .fused_adam import FusedAdam  # noqa: F401\n'
    "from .npu_fused_adam import NpuFusedAdam  # noqa: F401\n"
)


def _apex_files(patched: bool) -> dict[str, str]:
    doc = _STAND_IN.format(what="NVIDIA apex" + (" + Ascend patch" if patched else ""))
    return {
        "setup.py": nvidia_apex_setup_py(patched),
        "apex/__init__.py": (_APEX_INIT_PATCHED if patched else _APEX_INIT).format(doc=doc),
        "apex/optimizers/__init__.py": (_OPTIM_INIT_PATCHED if patched else _OPTIM_INIT).format(doc=doc),
    }


def _unified_diff(old: dict[str, str], new: dict[str, str]) -> str:
    """A ``diff -Nur apex apex-npu`` style patch (``patch -p1``), without timestamps."""
    import difflib

    out = []
    for name in sorted(new):
        a, b = old[name].splitlines(keepends=True), new[name].splitlines(keepends=True)
        out.append(f"diff -Nur apex/{name} apex-npu/{name}\n")
        out.extend(difflib.unified_diff(a, b, f"apex/{name}", f"apex-npu/{name}"))
    return "".join(out)


def _make_nvidia_apex(path: Path) -> str:
    repo = _Repo(path, "master")
    doc = _STAND_IN.format(what="NVIDIA apex")
    files = {
        "README.md": _readme("NVIDIA apex", "\nAscend's apex patches this tree (patch/npu.patch) and builds it.\n"),
        **_apex_files(patched=False),
        "apex/amp/__init__.py": f'"""{doc} (amp)."""\n',
        "apex/optimizers/fused_adam.py": (
            f'"""{doc} (FusedAdam)."""\n\n\nclass FusedAdam:\n    """The real one is a CUDA fused optimizer."""\n'
        ),
        "csrc/flatten_unflatten.cpp": f"// {doc} (apex_C sources are not compiled by the stand-in)\n",
        "tests/L0/run_test.py": f'"""{doc} (test runner)."""\n',
    }
    return repo.commit(files, "NVIDIA apex stand-in")


def _make_ascend_apex(path: Path, nvidia_commit: str) -> None:
    repo = _Repo(path, "master")
    doc = _STAND_IN.format(what="Ascend apex")
    build_sh = f"""#!/bin/bash
# {doc}
# Same steps as the real scripts/build.sh (49a7994): clone NVIDIA apex, check out the commit the patch is
# for, apply patch/npu.patch, copy src/ and tests/ over it, build the wheel with `setup.py --cpp_ext`.
# NVIDIA_APEX_URL (stand-in only) points the clone elsewhere, e.g. at the nvidia-apex stand-in.
set -e
SUPPORTED_PY_VERSION=(3.7 3.8 3.9 3.10 3.11 3.12 3.13)
PY_VERSION=3.10
for arg in "$@"; do
    case "$arg" in
        --python=*) PY_VERSION=${{arg#*=}} ;;
        *) echo "Unknown argument: $arg" >&2; exit 1 ;;
    esac
done
if [[ ! " ${{SUPPORTED_PY_VERSION[*]}} " =~ " $PY_VERSION " ]]; then
    echo "Unsupported python version: $PY_VERSION (supported: ${{SUPPORTED_PY_VERSION[*]}})" >&2
    exit 1
fi
CUR_DIR=$(dirname "$(readlink -f "$0")")
ROOT_DIR=$(readlink -f "$CUR_DIR/..")
APEX_DIR=$ROOT_DIR/apex
if [ -d "$APEX_DIR" ]; then
    echo "$APEX_DIR exists, if nothing to backup, please remove it" >&2
    exit 1
fi
git clone "${{NVIDIA_APEX_URL:-https://github.com/NVIDIA/apex.git}}" "$APEX_DIR"
cd "$APEX_DIR"
git checkout {nvidia_commit}
patch -p1 < "$ROOT_DIR/patch/npu.patch"
cp -r "$ROOT_DIR"/src/* "$APEX_DIR"
cp -r "$ROOT_DIR"/tests/* "$APEX_DIR/tests"
"python$PY_VERSION" setup.py --cpp_ext bdist_wheel
echo "The apex wheel is in $APEX_DIR/dist"
"""
    adam = (
        f'"""{_STAND_IN.format(what="Ascend apex NpuFusedAdam")}\n\n'
        'The real optimizer combines tensors on the NPU; this one only keeps its name and arguments.\n"""\n\n\n'
        "class NpuFusedAdam:\n"
        "    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):\n"
        "        self.params = list(params)\n"
        "        self.defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)\n"
    )
    files = {
        "README.md": _readme(
            "Ascend apex",
            "\nBuild: `bash scripts/build.sh --python=3.x`; the wheel is apex/dist/apex-0.1_ascend-*.whl\n",
        ),
        "patch/npu.patch": _unified_diff(_apex_files(patched=False), _apex_files(patched=True)),
        "src/apex/optimizers/npu_fused_adam.py": adam,
        "src/apex/contrib/__init__.py": f'"""{doc} (contrib)."""\n',
        "src/apex/contrib/combine_tensors/__init__.py": f'"""{doc} (combine_tensors)."""\n',
        "tests/L0/device.py": f'"""{doc} (tests: device selection)."""\n\nDEVICE = "npu"\n',
        "scripts/build.sh": build_sh,
    }
    repo.commit(files, "Ascend apex stand-in")

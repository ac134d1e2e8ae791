"""Opt-in acceptance test: the test row's chain built from the REAL upstream repositories.

    python3 -m pytest --real-sources DIR tests/test_real_sources.py

DIR holds clones or mirrors (shallow ones included) of Ascend/MindSpeed, Ascend/MindSpeed-LLM,
NVIDIA/Megatron-LM, Ascend/apex and NVIDIA/apex as DIR/mindspeed, DIR/mindspeed-llm, DIR/megatron,
DIR/apex and DIR/nvidia-apex, holding the commits the seed row (8.1.RC1) pins in matrix.yaml. For
example, for each source: ``git clone --depth 1 --branch v2.1.0 URL DIR/mindspeed-llm``, or for a
commit no branch tip names: ``git init DIR/mindspeed && git -C DIR/mindspeed fetch --depth 1 URL
2c085cc9473f8476341e543dd902270b8469de0d && git -C DIR/mindspeed checkout --detach FETCH_HEAD``.

The build is the test row (Debian bookworm, Python 3.11, torch 2.13.0 + torch_npu 2.13.0, stand-in
CANN) with the seed row's five sources: what CI cannot reach (gitee/gitcode/GitHub), exercised for
real on a machine that has them. The checks: the chain builds (apex with the options its build.sh
gives, MindSpeed without its setup.py calling pip), `invoke verify` tier 1 passes, `pip check` is
clean, `import megatron.core` works, and in the CPU smoke image (tests/smoke.py: stand-in CANN
runtime libraries, no device) every real entry script answers ``--help`` where it can without an
NPU, and ``ascend-llm preprocess`` runs MindSpeed-LLM's real preprocess_data.py for all four formats,
whose output the stage runner's own data checks then read.
"""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes.cann import make_cann_packages

from ascend_stack.build import Builder, BuildOptions, LayerResult, NetworkOptions
from ascend_stack.driver import Driver, find_buildkit_client
from ascend_stack.inputs import InputDirs
from ascend_stack.matrix import parse_matrix
from ascend_stack.target import Target, resolve
from ascend_stack.verify import run as verify

REPO = Path(__file__).resolve().parents[1]
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
LOCAL_WHEELS = Path("/opt/wheels")
SOURCES = ("apex", "nvidia_apex", "mindspeed", "mindspeed_llm", "megatron")
SEED_ROW = "8.1.RC1"

pytestmark = [pytest.mark.docker, pytest.mark.real_sources]


@dataclass
class RealChain:
    target: Target
    matrix_file: Path
    lock_dir: Path
    results: list[LayerResult]
    root: Path

    @property
    def image(self) -> str:
        return next(r.content_tag for r in self.results if r.name == "runtime")


def seed_sources_matrix(raw: dict[str, Any]) -> dict[str, Any]:
    """matrix.yaml with the test row's git sources replaced by the seed row's (refs and pinned commits)."""
    out = copy.deepcopy(raw)
    rows = {r.get("id") or r["cann"]: r for r in out["rows"]}
    for key in SOURCES:
        rows["test"][key] = copy.deepcopy(rows[SEED_ROW][key])
    # what the seed row's lock needs with these sources (MindSpeed's tokenizers<=0.20.3 vs transformers 4.51.0)
    rows["test"]["lock_overrides"] = copy.deepcopy(rows[SEED_ROW].get("lock_overrides", []))
    return out


@pytest.fixture(scope="module")
def real_sources(request: pytest.FixtureRequest) -> Path:
    given = request.config.getoption("--real-sources")
    if not given:
        pytest.skip("opt-in: pass --real-sources DIR (clones of the five upstream repositories)")
    path = Path(given).resolve()
    missing = [n for n in ("mindspeed", "mindspeed-llm", "megatron", "apex", "nvidia-apex") if not (path / n).exists()]
    if missing:
        pytest.fail(f"--real-sources {path} lacks {', '.join(missing)}")
    return path


@pytest.fixture(scope="module")
def real_chain(real_sources: Path, docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealChain]:
    from ascend_stack.baseimage import build_base_image

    root = tmp_path_factory.mktemp("real-chain")
    build_base_image("debian-bookworm", "x86_64", docker_client=docker_client)
    raw = seed_sources_matrix(yaml.safe_load((REPO / "matrix.yaml").read_text()))
    matrix_file = root / "matrix.yaml"
    matrix_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    target = resolve(parse_matrix(raw), "test", arch="x86_64")
    make_cann_packages(root / "packages", target.cann, "x86_64", chips=("910b",))
    # The real sources' requirements make the test row's committed Python lock stale: the build locks
    # them afresh (uv, for the target's platform) into root/locks, never over the committed file.
    dirs = InputDirs.under(
        root, extra_wheelhouses=(LOCAL_WHEELS,) if LOCAL_WHEELS.is_dir() else (), source_overrides=real_sources,
        python_locks=root / "locks",
    )  # fmt: skip
    opts = BuildOptions(
        dirs=dirs,
        network=NetworkOptions(ca_cert=HOST_CA if HOST_CA.is_file() else None),
        out_dir=root / "build" / "render",
    )
    results = Builder(target, opts, Driver(find_buildkit_client(), docker_client)).run()
    yield RealChain(target, matrix_file, dirs.locks, results, root)


def sh(docker_client: Any, image: str, command: str, **kwargs: Any) -> str:
    return docker_client.containers.run(image, ["-c", command], entrypoint="bash", remove=True, **kwargs).decode()


def test_the_chain_builds_at_the_seed_rows_commits(real_chain: RealChain, docker_client: Any) -> None:
    assert [r.name for r in real_chain.results] == ["base", "cann", "pta", "mindspeed", "runtime"]
    stack = json.loads(sh(docker_client, real_chain.image, "cat /etc/ascend-llm-stack/stack.json"))
    row = real_chain.target.row
    for key in ("apex", "mindspeed", "mindspeed_llm", "megatron"):
        assert stack[key]["commit"] == row.git_sources()[key].commit, key


def test_verify_tier_1_passes(real_chain: RealChain) -> None:
    verdict = verify(real_chain.image, tier="1", lock_dir=real_chain.lock_dir, matrix_path=real_chain.matrix_file,
                     log_dir=real_chain.root / "verify")  # fmt: skip
    print(verdict.summary())
    assert verdict.ok, verdict.summary()


def test_pip_check_is_clean(real_chain: RealChain, docker_client: Any) -> None:
    assert "No broken requirements found." in sh(docker_client, real_chain.image, "python -m pip check")


def test_megatron_core_imports(real_chain: RealChain, docker_client: Any) -> None:
    code = "import megatron.core; print(megatron.core.__file__)"
    out = sh(docker_client, real_chain.image, f"cd /opt/MindSpeed-LLM && TORCH_DEVICE_BACKEND_AUTOLOAD=0 "
                                              f"python -c {shlex.quote(code)} 2>/dev/null")  # fmt: skip
    assert out.strip() == "/opt/MindSpeed-LLM/megatron/core/__init__.py"


# --------------------------------------------------------------------------------------------------------
# in the CPU smoke image (tests/smoke.py): the real entry scripts and MindSpeed-LLM's real preprocessing

ENTRY_SCRIPTS = ("preprocess_data.py", "convert_ckpt.py", "pretrain_gpt.py", "posttrain_gpt.py", "inference.py",
                 "evaluation.py")  # fmt: skip
FORMATS = {
    "alpaca": [{"instruction": f"say {i}", "input": "", "output": f"{i} said"} for i in range(40)],
    "sharegpt": [
        {"conversations": [{"from": "human", "value": f"hi {i}"}, {"from": "gpt", "value": f"hello {i}"}]}
        for i in range(40)
    ],
    "openai": [
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"a{i}"},
            ]
        }
        for i in range(40)
    ],
    "pretrain": [{"text": f"document {i}: the quick brown fox jumps over the lazy dog {i} times."} for i in range(40)],
}


@pytest.fixture(scope="module")
def smoke(real_chain: RealChain, docker_client: Any) -> Iterator[str]:
    from smoke import build_smoke_image, remove_smoke_image

    tag = build_smoke_image(docker_client, real_chain.image)
    yield tag
    remove_smoke_image(docker_client, tag)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small data set per format and a tokenizer trained here (no hub): what a team brings."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("real-data")
    texts = []
    for fmt, records in FORMATS.items():
        (root / f"{fmt}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        texts += [json.dumps(r) for r in records]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=specials))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", bos_token=None)  # fmt: skip
    fast.save_pretrained(root / "tokenizer")
    (root / "out").mkdir()
    root.chmod(0o777)
    (root / "out").chmod(0o777)
    return root


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_entry_script_help(script: str, smoke: str, docker_client: Any) -> None:
    """`--help` of each real entry script, run as a stage runs it (torch_npu imports; no device)."""
    from smoke import run_python_as_stage

    code = f"import runpy, sys; sys.argv = [{script!r}, '--help']; runpy.run_path({script!r}, run_name='__main__')"
    got = run_python_as_stage(docker_client, smoke, code)
    print(f"{script}: exit {got.exit_code} in {got.seconds:.0f} s; last line: {got.output.strip().splitlines()[-1:]}")
    assert got.exit_code == 0, got.output[-3000:]
    assert "usage:" in got.output


@pytest.mark.parametrize("module", ["torch_npu", "mindspeed_llm", "peft", "apex", "datasets"])
def test_modules_that_need_the_npu_stack_import_in_the_smoke_image(module: str, smoke: str, docker_client: Any) -> None:
    """What tier 1 cannot import without CANN's libraries (peft loads torch_npu through accelerate)."""
    from smoke import run_python_as_stage

    got = run_python_as_stage(docker_client, smoke, f"import {module}; print('imported', {module!r})")
    assert got.exit_code == 0 and f"imported {module}" in got.output, got.output[-2000:]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_ascend_llm_preprocess_runs_mindspeed_llms_real_preprocess_data(
    fmt: str, smoke: str, docker_client: Any, data_dir: Path
) -> None:
    from ascend_llm import datafiles
    from smoke import run_stage

    prefix = data_dir / "out" / fmt
    got = run_stage(
        docker_client, smoke, "preprocess", "--format", fmt, "--input", str(data_dir / f"{fmt}.jsonl"),
        "--output-prefix", str(prefix), "--tokenizer", str(data_dir / "tokenizer"),
        volumes={str(data_dir): {"bind": str(data_dir), "mode": "rw"}},
    )  # fmt: skip
    print(f"preprocess --format {fmt}: exit {got.exit_code} in {got.seconds:.0f} s")
    assert got.exit_code == 0, got.output[-3000:]
    if fmt == "pretrain":
        problems = datafiles.check_pretrain_data(f"{prefix}{datafiles.PRETRAIN_SUFFIX}")
    else:
        problems = datafiles.check_packed_data(str(prefix), "sft")
    assert problems == [], problems  # the stage runner's own checks read what upstream wrote
    index, error = datafiles.read_index(
        f"{prefix}{datafiles.PRETRAIN_SUFFIX}" if fmt == "pretrain" else f"{prefix}_packed_input_ids_document"
    )
    assert error is None and index is not None and index.documents >= 1

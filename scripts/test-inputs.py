#!/usr/bin/env python3
"""Write the stand-in inputs of the hidden `test` matrix row, so a person can build it by hand.

The integration tests generate the same stand-ins (tests/fakes) in temporary folders. This script
puts them where `invoke build` looks by default: the stand-in CANN installers in `packages/` and the
stand-in MindSpeed / MindSpeed-LLM / Megatron-LM / apex repositories in `build/standin-sources/`
(pass that folder as `--sources`). None of it is Huawei's or upstream's software, except the
Megatron stand-in's `megatron/core`: the real megatron-core 0.8.0 from PyPI.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import yaml  # noqa: E402
from fakes import make_cann_packages, make_source_repos  # noqa: E402  (tests/ is not a package)
from fakes.sources import megatron_core_wheel  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default=platform.machine().replace("arm64", "aarch64"), help="aarch64 or x86_64")
    parser.add_argument("--packages", type=Path, default=REPO / "packages", help="package cache (default packages/)")
    parser.add_argument("--sources", type=Path, default=REPO / "build/standin-sources", help="where the repos go")
    args = parser.parse_args()
    rows = yaml.safe_load((REPO / "matrix.yaml").read_text())["rows"]
    cann = next(r["cann"] for r in rows if r.get("id") == "test")
    for path in make_cann_packages(args.packages, cann, args.arch).values():
        print(f"stand-in CANN installer: {path}")
    if args.sources.exists():
        print(f"stand-in repositories already in {args.sources}")
    else:
        wheel = megatron_core_wheel(REPO / "build" / "test-cache")  # the real megatron/core, from PyPI
        for name, path in make_source_repos(args.sources, wheel).items():
            print(f"stand-in repository {name}: {path}")
    wheels = " --wheelhouse /opt/wheels" if Path("/opt/wheels").is_dir() else ""
    print(f"\nnow: invoke build --cann test --arch {args.arch} --sources {args.sources}{wheels} [--ca-cert FILE]")
    return 0


if __name__ == "__main__":
    sys.exit(main())

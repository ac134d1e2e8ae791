"""Print, as JSON, the environment variables that CANN's set_env.sh scripts add or change.

Runs inside the freshly installed cann image (``python3 - SCRIPT...``); the builder turns the
result into ENV lines, so a plain ``docker run`` / ``docker exec`` has the CANN environment
without any profile or entrypoint sourcing it.
Usage: capture-env.py DRIVER_LIBS SCRIPT [ARGS] [-- SCRIPT [ARGS]]...
"""

import json
import os
import shlex
import subprocess
import sys

IGNORED = {"_", "SHLVL", "PWD", "OLDPWD"}
# Search paths: set_env.sh leaves empty entries (a trailing ':'), which would add the working
# directory to the library or module path of every process in the image. Drop them, and repeats.
SEARCH_PATHS = {"PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "ASCEND_CUSTOM_OPP_PATH"}


def clean(value: str) -> str:
    return ":".join(dict.fromkeys(p for p in value.split(":") if p))


def main(argv: list[str]) -> int:
    driver_libs, rest = argv[0], argv[1:]
    scripts, current = [], []
    for arg in [*rest, "--"]:
        if arg == "--":
            if current:
                scripts.append(current)
            current = []
        else:
            current.append(arg)
    missing = [s[0] for s in scripts if not os.path.isfile(s[0])]
    if missing:
        print(f"capture-env: not installed: {', '.join(missing)}", file=sys.stderr)
        return 1
    sourcing = " && ".join("source " + " ".join(shlex.quote(a) for a in s) for s in scripts)
    out = subprocess.run(["bash", "-c", f"set -e; {sourcing}; env -0"], check=True, capture_output=True).stdout.decode()
    after = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    before = dict(os.environ)
    changed = {k: v for k, v in sorted(after.items()) if k not in IGNORED and before.get(k) != v}
    old = changed.get("LD_LIBRARY_PATH", before.get("LD_LIBRARY_PATH", ""))
    changed["LD_LIBRARY_PATH"] = ":".join(p for p in [old, driver_libs] if p)
    changed = {k: clean(v) if k in SEARCH_PATHS else v for k, v in changed.items()}
    # One line, newline-terminated: docker's log stream can drop a final unterminated line.
    print(json.dumps(changed, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

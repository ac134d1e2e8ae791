"""``invoke run``: the ``docker run`` line for one stage on one Atlas host.

It replaces the seed guide's ``--privileged`` container with sixteen hand-written ``--device`` flags by
what the Ascend documentation asks for (see ``../shared/reference/ascend-runtime.md`` §2):

* the NPUs (``/dev/davinciN``, 0-7 on Atlas A2, 0-15 on Atlas A3) and the three management nodes
  (``/dev/davinci_manager``, ``/dev/devmm_svm``, ``/dev/hisi_hdc``), and the host driver read-only
  (``/usr/local/Ascend/driver``, ``/usr/local/dcmi``, ``npu-smi``, ``/etc/ascend_install.info``);
* or, with Ascend Docker Runtime (``--runtime ascend``), ``ASCEND_VISIBLE_DEVICES`` and no device
  flags: the runtime adds the devices and mounts the driver libraries itself (its ``base.list``), so
  only the two version files it leaves out are mounted;
* shared memory (``--shm-size``, or the host's IPC namespace), host networking (HCCL and torchrun's
  rendezvous listen on host ports), ``--init``, a stop timeout long enough to save a checkpoint;
* the user's data and checkpoint directories, at the same path inside, so stage options read the same
  in and out of the container.

The image runs as the non-root user HwHiAiUser. The host's device nodes are ``HwHiAiUser:HwHiAiUser
0660`` (its driver files may be group-only too), and the container user's groups come from the image,
whose gid may differ from the host's: so the group of every device node and driver path that "other"
may not use is added with ``--group-add`` (read from this host), and nothing more. ``--user root``
runs the container as root instead.

No ``--privileged`` unless asked for. ``--print`` shows the line; otherwise the host is checked (the
devices, driver files, mounted directories and the runtime exist) and ``docker`` replaces this process.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError


@dataclass(frozen=True)
class HostType:
    name: str
    title: str
    npus: int


HOST_TYPES = {
    "a2": HostType("a2", "Atlas A2 (800T A2, 910B)", 8),
    "a3": HostType("a3", "Atlas A3 (800T A3 / 900 A3 SuperPoD)", 16),
}
MANAGEMENT_DEVICES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
DRIVER_MOUNTS = (
    "/usr/local/Ascend/driver",  # lib64, version.info, tools/hccn_tool
    "/usr/local/dcmi",
    "/usr/local/bin/npu-smi",
    "/etc/ascend_install.info",
)
# Ascend Docker Runtime's base.list mounts driver/lib64, driver/include, dcmi, npu-smi and /var/queue_schedule,
# but not the two files torch_npu and `ascend-llm check` read the driver version from.
RUNTIME_MOUNTS = ("/usr/local/Ascend/driver/version.info", "/etc/ascend_install.info")
RUNTIMES = ("ascend",)
DEFAULT_SHM = "64g"
STOP_TIMEOUT = 900  # seconds: one iteration plus a checkpoint save (docs/stages.md, "Failure, signals and logs")
_SIZE = re.compile(r"^\d+(\.\d+)?[bkmgBKMG]?$")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$")
ROOT_USERS = {"root", "0"}
# An image reference as Docker parses it (distribution/reference): [host[:port]/]path[:tag][@digest]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
_IMAGE_REF = re.compile(
    rf"(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?",
    re.ASCII,
)


def check_image(ref: str) -> None:
    """``--image`` is an image reference Docker and Kubernetes accept (a typo'd or pasted line is not)."""
    if not _IMAGE_REF.fullmatch(ref) or len(ref.split("@")[0].rsplit(":", 1)[0]) > 255:
        raise UserError(
            f"--image {ref!r}: not an image reference; expected [REGISTRY[:PORT]/]NAME[:TAG][@sha256:DIGEST] "
            f"with a lower-case NAME, e.g. the tag `invoke build` printed"
        )


@dataclass
class RunOptions:
    """What ``invoke run`` was given (see ``tasks.py`` for the help of each)."""

    image: str
    command: Sequence[str]
    npus: str = "all"
    host_type: str = "a2"
    runtime: str | None = None
    privileged: bool = False
    mounts: Sequence[str] = field(default_factory=list)
    env: Sequence[str] = field(default_factory=list)
    name: str | None = None
    network: str = "host"
    shm_size: str | None = None
    ipc_host: bool = False
    detach: bool = False
    interactive: bool = False
    keep: bool = False
    user: str | None = None


def access_groups(devices: Sequence[str], files: Sequence[str] = (), root: Path = Path("/")) -> list[int]:
    """The host groups a non-root container user needs: read and write for the device nodes, read (and
    enter, for a directory) for the driver's files. A path "other" may already use, or that only its
    owner may use, adds none; a missing one is for :func:`check_host` to report."""
    gids: list[int] = []
    for path in [*devices, *files]:
        try:
            st = os.stat(root / path.lstrip("/"))
        except OSError:
            continue
        if path in devices:
            want = stat.S_IROTH | stat.S_IWOTH
        else:
            want = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else 0)
        group = want << 3  # the same bits for the group
        if st.st_mode & want != want and st.st_mode & group == group and st.st_gid not in gids:
            gids.append(st.st_gid)
    return gids


def host_type(name: str) -> HostType:
    try:
        return HOST_TYPES[name.lower()]
    except KeyError:
        raise UserError(f"--host-type {name}: choose a2 (8 NPUs) or a3 (16 NPUs)") from None


def parse_npus(text: str, host: HostType) -> list[int]:
    """``all``, ``none``, ``N``, ``N-M`` or a comma list of those -> NPU indices (refused in one line)."""
    spec = text.strip().lower()
    if spec == "all":
        return list(range(host.npus))
    if spec == "none":
        return []
    ids: list[int] = []
    for part in spec.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise UserError(f"--npus {text}: expected all, none, N, N-M or a comma list such as 0-3,6")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise UserError(f"--npus {text}: the range {part.strip()} runs backwards")
        ids.extend(range(first, last + 1))
    beyond = [i for i in ids if i >= host.npus]
    if beyond:
        raise UserError(
            f"--npus {text}: an {host.title} host has NPUs 0-{host.npus - 1}; "
            f"{', '.join(map(str, beyond))} do not exist (--host-type a3 for 16)"
        )
    if len(set(ids)) != len(ids):
        raise UserError(f"--npus {text}: NPU(s) listed twice")
    return sorted(ids)


def device_list(ids: Sequence[int]) -> str:
    """[0..7] -> '0-7'; [0, 2, 3] -> '0,2-3' (ASCEND_VISIBLE_DEVICES syntax)."""
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in runs)


def parse_mount(spec: str, cwd: Path | None = None) -> tuple[str, str, str]:
    """``DIR``, ``SRC:DST`` or ``SRC:DST:ro|rw`` -> (absolute source, absolute target, mode)."""
    parts = spec.split(":")
    if not spec or len(parts) > 3 or not all(parts):
        raise UserError(f"--mount {spec!r}: expected DIR, SRC:DST or SRC:DST:ro")
    mode = "rw"
    if len(parts) == 3:
        mode = parts.pop()
        if mode not in ("ro", "rw"):
            raise UserError(f"--mount {spec}: the mode must be ro or rw, not {mode}")
    source = os.path.normpath(os.path.join(cwd or Path.cwd(), os.path.expanduser(parts[0])))
    target = parts[1] if len(parts) > 1 else source
    if not target.startswith("/"):
        raise UserError(f"--mount {spec}: the path inside the container must be absolute, not {target}")
    return source, os.path.normpath(target), mode


@dataclass
class DockerRun:
    """The checked ``docker run`` command and what a real run must find on the host."""

    argv: list[str]
    host_paths: list[str]
    mount_sources: list[str]
    runtime: str | None

    def render(self) -> str:
        """One option per line, paste-able into a shell; the image and its command on the last."""
        lines = [shlex.join(self.argv[:2])]
        rest = self.argv[2:]
        i = 0
        while i < len(rest):
            token = rest[i]
            if token in _VALUED:
                lines.append(shlex.join(rest[i : i + 2]))
                i += 2
            elif token.startswith("-"):
                lines.append(shlex.quote(token))
                i += 1
            else:
                lines.append(shlex.join(rest[i:]))
                break
        return " \\\n    ".join(lines) + "\n"


_VALUED = {"--name", "--runtime", "-e", "--device", "-v", "--network", "--shm-size", "--ipc", "--stop-timeout",
           "--user", "--group-add"}  # fmt: skip


def docker_run(opts: RunOptions, cwd: Path | None = None, root: Path = Path("/")) -> DockerRun:
    """Validate the options (one line per refusal) and compose the ``docker run`` argv; the groups the
    NPUs need are read from the device nodes and driver paths under ``root`` (this host)."""
    if not opts.image:
        raise UserError("--image is required: the tag `invoke build` printed, e.g. ascend-llm-stack:8.1.rc1-910b-...")
    check_image(opts.image)
    if not opts.command:
        raise UserError("say what to run after --, e.g. invoke run --image TAG -- check (see ascend-llm --help)")
    host = host_type(opts.host_type)
    ids = parse_npus(opts.npus, host)
    runtime = opts.runtime.lower() if opts.runtime else None
    if runtime is not None and runtime not in RUNTIMES:
        raise UserError(
            f"--runtime {opts.runtime}: only 'ascend' (Ascend Docker Runtime) is supported; "
            f"leave it out to pass the devices as --device flags"
        )
    if runtime and not ids:
        raise UserError("--runtime ascend with --npus none: the runtime would give no NPU; drop one of them")
    if opts.privileged and runtime:
        raise UserError(
            "--privileged with --runtime ascend: a privileged container sees every device, so "
            "ASCEND_VISIBLE_DEVICES no longer limits it; choose one"
        )
    if opts.privileged and ids and len(ids) < host.npus:
        raise UserError(
            f"--privileged with --npus {opts.npus}: a privileged container sees all {host.npus} NPUs; "
            f"drop --privileged (the device flags are enough) or use --npus all"
        )
    if opts.ipc_host and opts.shm_size:
        raise UserError("--ipc-host and --shm-size together: with the host's IPC namespace Docker ignores --shm-size")
    shm = opts.shm_size or DEFAULT_SHM
    if not _SIZE.match(shm):
        raise UserError(f"--shm-size {shm}: a size such as 64g, 512m")
    if opts.name is not None and not _NAME.match(opts.name):
        raise UserError(f"--name {opts.name}: letters, digits, '_', '.', '-' only, starting with a letter or digit")
    for item in opts.env:
        if not _ENV.match(item):
            raise UserError(f"--env {item!r}: expected NAME=VALUE")
        if item.split("=", 1)[0] == "ASCEND_VISIBLE_DEVICES":
            raise UserError("--env ASCEND_VISIBLE_DEVICES=...: choose the NPUs with --npus (and --runtime ascend)")
    if opts.user is not None and not _USER.match(opts.user):
        raise UserError(f"--user {opts.user}: a user or uid, optionally :group or :gid, e.g. root or 1000:1000")
    mounts = [parse_mount(m, cwd) for m in opts.mounts]
    targets = [t for _, t, _ in mounts]
    clash = sorted({t for t in targets if targets.count(t) > 1})
    if clash:
        raise UserError(f"--mount: {', '.join(clash)} is mounted twice")

    argv = ["docker", "run"]
    if not opts.keep:
        argv.append("--rm")
    if opts.name:
        argv += ["--name", opts.name]
    if opts.detach:
        argv.append("--detach")
    if opts.interactive:
        argv += ["--interactive", "--tty"]
    argv.append("--init")
    if opts.user is not None:
        argv += ["--user", opts.user]
    host_paths: list[str] = []
    npu_paths = [f"/dev/davinci{i}" for i in ids] + (list(MANAGEMENT_DEVICES) if ids else [])
    if runtime:
        argv += ["--runtime", runtime, "-e", f"ASCEND_VISIBLE_DEVICES={device_list(ids)}"]
        for path in RUNTIME_MOUNTS:
            argv += ["-v", f"{path}:{path}:ro"]
        host_paths += list(RUNTIME_MOUNTS)
    elif ids:
        devices = [f"/dev/davinci{i}" for i in ids] + list(MANAGEMENT_DEVICES)
        for device in devices:
            argv += ["--device", device]
        for path in DRIVER_MOUNTS:
            argv += ["-v", f"{path}:{path}:ro"]
        host_paths += devices + list(DRIVER_MOUNTS)
    if ids and (opts.user or "").split(":")[0] not in ROOT_USERS:
        for gid in access_groups(npu_paths, DRIVER_MOUNTS, root):  # Ascend Docker Runtime mounts them too
            argv += ["--group-add", str(gid)]
    argv += ["--network", opts.network]
    argv += ["--ipc", "host"] if opts.ipc_host else ["--shm-size", shm]
    argv += ["--stop-timeout", str(STOP_TIMEOUT)]
    for source, target, mode in mounts:
        argv += ["-v", f"{source}:{target}" + (":ro" if mode == "ro" else "")]
    for item in opts.env:
        argv += ["-e", item]
    if opts.privileged:
        argv.append("--privileged")
    argv += [opts.image, *opts.command]
    return DockerRun(argv, host_paths, [s for s, _, _ in mounts], runtime)


def docker_runtimes(docker: str) -> set[str]:
    """The OCI runtimes the local engine knows (``docker info``)."""
    out = subprocess.run(
        [docker, "info", "--format", "{{json .Runtimes}}"], capture_output=True, text=True, check=False, timeout=60
    )
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no answer"])[-1]
        raise UserError(f"docker info failed: {last} (is the engine running? scripts/docker-engine.sh)")
    try:
        return set(json.loads(out.stdout or "{}"))
    except ValueError:
        return set()


def check_host(run: DockerRun, root: Path = Path("/"), docker: str | None = None) -> str:
    """What a real run needs on this host; returns the docker executable. One line per refusal."""
    exe = docker or shutil.which("docker")
    if exe is None:
        raise UserError("the docker command is not installed: run scripts/docker-engine.sh (or use --print)")
    missing = [p for p in run.host_paths if not (root / p.lstrip("/")).exists()]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise UserError(
            f"this host lacks {shown}: run on an Atlas host with the NPU driver installed, pick existing NPUs "
            f"with --npus, or --npus none for CPU-only stages (--print shows the command without checking)"
        )
    absent = [s for s in run.mount_sources if not (root / s.lstrip("/")).exists()]
    if absent:
        raise UserError(f"--mount {absent[0]}: no such file or directory on this host")
    if run.runtime and run.runtime not in docker_runtimes(exe):
        raise UserError(
            f"the Docker engine has no '{run.runtime}' runtime: install Ascend Docker Runtime, "
            f"or leave out --runtime to pass the devices as --device flags"
        )
    return exe

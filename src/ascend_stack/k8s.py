"""``invoke k8s``: a cluster manifest that runs one stage on N nodes under a training launcher.

Three launchers, each injecting the rendezvous that the stage runner reads (``entrypoints/ascend_llm/
launcher.py``; ``../shared/reference/ascend-runtime.md`` §5):

* ``volcano``: a ``batch.volcano.sh/v1alpha1`` Job with a ``master`` and a ``worker`` task, gang-
  scheduled (``minAvailable`` = N), and the pytorch plugin (``MASTER_ADDR``, ``MASTER_PORT``,
  ``WORLD_SIZE`` = pods, ``RANK``); ``NPUS_PER_NODE`` tells the stage how many processes to start;
* ``pytorchjob``: a Kubeflow ``kubeflow.org/v1`` PyTorchJob, ``Master`` + ``Worker`` replicas,
  ``nprocPerNode`` (``PET_NPROC_PER_NODE``), the container named ``pytorch`` with the port named
  ``pytorchjob-port`` (the operator looks for both);
* ``ascendjob``: MindCluster's ``mindxdl.gitee.com/v1`` AscendJob, ``Master`` + ``Worker`` replicas, the
  container named ``ascend`` (the Ascend Operator injects its variables only there), the port named
  ``ascendjob-port``, the ring-controller label and the accelerator-type node selector.

Every pod asks the Ascend device plugin for its NPUs (``huawei.com/Ascend910`` by default), mounts a
memory-backed ``emptyDir`` at ``/dev/shm``, the host driver read-only (unless the nodes' Ascend Docker
Runtime mounts it), the user's volumes, uses host networking (HCCL and torchrun listen on host ports)
with ``ClusterFirstWithHostNet`` DNS, and runs ``ascend-llm <stage> ...``. Each pod template is checked
with the official Kubernetes client's ``V1PodTemplateSpec`` model: it must load, and serialize back to
exactly what was written (an unknown or misspelled field would be dropped).
"""

from __future__ import annotations

import copy
import difflib
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import UserError
from .paths import one_line
from .run import check_image, host_type

KINDS = ("volcano", "pytorchjob", "ascendjob")
DEFAULT_RESOURCE = "huawei.com/Ascend910"
DRIVER_PATHS = (
    ("ascend-driver", "/usr/local/Ascend/driver", "Directory"),
    ("ascend-dcmi", "/usr/local/dcmi", "Directory"),
    ("npu-smi", "/usr/local/bin/npu-smi", "File"),
    ("ascend-install-info", "/etc/ascend_install.info", "File"),
)
ACCELERATOR_TYPE = {"a2": "module-910b-8", "a3": "module-a3-16"}  # MindCluster's node label values
PORTS = {"volcano": 23456, "pytorchjob": 23456, "ascendjob": 2222}
CONTAINER = {"volcano": "ascend", "pytorchjob": "pytorch", "ascendjob": "ascend"}
GRACE_SECONDS = 900  # one iteration plus a checkpoint save after SIGTERM (docs/stages.md)
# Set by the launcher in every pod: the same value in every pod's arguments would be wrong.
LAUNCHER_FLAGS = ("--nnodes", "--node-rank", "--master-addr", "--master-port")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$")
_RESOURCE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_LABEL = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?=[-A-Za-z0-9_.]*$")


@dataclass
class ManifestOptions:
    """What ``invoke k8s`` was given (see ``tasks.py`` for the help of each)."""

    image: str
    command: Sequence[str]
    nodes: int
    kind: str
    name: str = "ascend-llm"
    namespace: str | None = None
    host_type: str = "a2"
    npus_per_node: int | None = None
    resource: str = DEFAULT_RESOURCE
    shm_size: str = "64Gi"
    host_network: bool = True
    driver_mounts: bool = True
    volumes: Sequence[str] = field(default_factory=list)
    pvcs: Sequence[str] = field(default_factory=list)
    env: Sequence[str] = field(default_factory=list)
    node_selector: Sequence[str] = field(default_factory=list)
    queue: str = "default"


def _check(opts: ManifestOptions) -> tuple[str, int]:
    """One line per refusal; returns the kind and the NPUs per node."""
    kind = opts.kind.lower() if opts.kind else ""
    if kind not in KINDS:
        raise UserError(f"--kind {opts.kind or '(missing)'}: choose volcano, pytorchjob or ascendjob")
    if not opts.image:
        raise UserError("--image is required: the tag of an image your cluster's nodes can pull")
    check_image(opts.image)
    if not opts.command:
        raise UserError("say what to run after --, e.g. invoke k8s ... -- selftest comm")
    stages = stage_names()
    if opts.command[0] not in stages:
        close = difflib.get_close_matches(opts.command[0], stages, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(f"-- {opts.command[0]!r}: not a stage of ascend-llm; {hint}choose one of {', '.join(stages)}")
    if opts.nodes < 1:
        raise UserError(f"--nodes {opts.nodes}: at least 1")
    host = host_type(opts.host_type)
    npus = host.npus if opts.npus_per_node is None else opts.npus_per_node
    if not 1 <= npus <= host.npus:
        raise UserError(f"--npus-per-node {npus}: an {host.title} node has 1 to {host.npus} NPUs")
    if not _DNS_LABEL.match(opts.name) or len(opts.name) > 45:
        raise UserError(
            f"--name {opts.name}: lower-case letters, digits and '-', at most 45 characters "
            f"(the launchers append '-master-0' and the like)"
        )
    if opts.namespace is not None and not _DNS_LABEL.match(opts.namespace):
        raise UserError(f"--namespace {opts.namespace}: not a Kubernetes namespace name")
    if not _RESOURCE.match(opts.resource):
        raise UserError(f"--resource {opts.resource}: expected a device-plugin resource such as {DEFAULT_RESOURCE}")
    if not _QUANTITY.match(opts.shm_size):
        raise UserError(f"--shm-size {opts.shm_size}: a Kubernetes quantity such as 64Gi or 512Mi")
    for item in opts.env:
        if not _ENV.match(item):
            raise UserError(f"--env {item!r}: expected NAME=VALUE")
    for item in opts.node_selector:
        if not _LABEL.match(item):
            raise UserError(f"--node-selector {item!r}: expected LABEL=VALUE, e.g. accelerator-type=module-910b-8")
    words = list(opts.command)
    for flag in LAUNCHER_FLAGS:
        if any(w == flag or w.startswith(flag + "=") for w in words):
            how = "--nodes sets the node count and " if flag == "--nnodes" else ""
            raise UserError(
                f"drop {flag} from the stage arguments: {how}the {kind} launcher gives every pod its own rendezvous"
            )
    return kind, npus


def stage_names() -> list[str]:
    """The stage runner's stages (its registry is the one list of them)."""
    from ascend_llm.stages import STAGES

    return list(STAGES)


def _volumes(opts: ManifestOptions) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts): shared memory, the driver, the user's host paths and claims."""
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": opts.shm_size}}]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if opts.driver_mounts:
        for name, path, kind in DRIVER_PATHS:
            volumes.append({"name": name, "hostPath": {"path": path, "type": kind}})
            mounts.append({"name": name, "mountPath": path, "readOnly": True})
    for index, spec in enumerate(opts.volumes):
        parts = spec.split(":")
        if len(parts) > 2 or not all(parts) or not all(p.startswith("/") for p in parts):
            raise UserError(f"--volume {spec}: expected /HOST/PATH or /HOST/PATH:/MOUNT/PATH (absolute paths)")
        source, target = parts[0], parts[-1]
        volumes.append({"name": f"data-{index}", "hostPath": {"path": source, "type": "Directory"}})
        mounts.append({"name": f"data-{index}", "mountPath": target})
    for index, spec in enumerate(opts.pvcs):
        claim, _, target = spec.partition(":")
        if not _DNS_LABEL.match(claim) or not target.startswith("/"):
            raise UserError(f"--pvc {spec}: expected CLAIM:/MOUNT/PATH")
        volumes.append({"name": f"claim-{index}", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": f"claim-{index}", "mountPath": target})
    paths = [m["mountPath"] for m in mounts]
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        raise UserError(f"{', '.join(twice)} is mounted twice (--volume/--pvc, or over the driver or /dev/shm)")
    return volumes, mounts


def pod_template(opts: ManifestOptions, kind: str, npus: int) -> dict[str, Any]:
    """The pod every replica runs: one container ``ascend-llm <stage> ...`` with NPUs and volumes."""
    volumes, mounts = _volumes(opts)
    count = str(npus)
    env: list[dict[str, Any]] = []
    if kind == "volcano":
        env.append({"name": "NPUS_PER_NODE", "value": count})  # Volcano's plugin says nothing about processes
    if kind == "ascendjob":
        # read by Ascend Docker Runtime when Volcano allocated whole NPUs (MindCluster's AscendJob sample)
        annotation = f"metadata.annotations['{opts.resource}']"
        env.append({"name": "ASCEND_VISIBLE_DEVICES", "valueFrom": {"fieldRef": {"fieldPath": annotation}}})
    for item in opts.env:
        name, _, value = item.partition("=")
        env = [e for e in env if e["name"] != name] + [{"name": name, "value": value}]
    container: dict[str, Any] = {
        "name": CONTAINER[kind],
        "image": opts.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["ascend-llm"],
        "args": list(opts.command),
        "resources": {"requests": {opts.resource: count}, "limits": {opts.resource: count}},
        "volumeMounts": mounts,
    }
    if env:
        container["env"] = env
    if kind in ("pytorchjob", "ascendjob"):
        container["ports"] = [{"name": f"{kind}-port", "containerPort": PORTS[kind]}]
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
    }
    if kind == "volcano":
        spec["restartPolicy"] = "Never"
    if opts.host_network:
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"  # the launcher's MASTER_ADDR is a cluster DNS name
    selector = dict(item.split("=", 1) for item in opts.node_selector)
    if kind == "ascendjob":
        selector.setdefault("accelerator-type", ACCELERATOR_TYPE[host_type(opts.host_type).name])
    if selector:
        spec["nodeSelector"] = selector
    labels = {"app.kubernetes.io/name": "ascend-llm", "app.kubernetes.io/instance": opts.name}
    if kind == "ascendjob":
        labels["ring-controller.atlas"] = "ascend-910b"
    return {"metadata": {"labels": labels}, "spec": spec}


def _metadata(opts: ManifestOptions, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": opts.name}
    if opts.namespace:
        meta["namespace"] = opts.namespace
    meta["labels"] = {"app.kubernetes.io/name": "ascend-llm", **(labels or {})}
    return meta


def manifest(opts: ManifestOptions) -> dict[str, Any]:
    """The whole object for ``kubectl apply -f``; every pod template is validated."""
    kind, npus = _check(opts)
    template = pod_template(opts, kind, npus)
    validate_pod_template(template)
    workers = opts.nodes - 1
    if kind == "volcano":
        master_task: dict[str, Any] = {
            "name": "master",
            "replicas": 1,
            "template": template,
            "policies": [{"event": "TaskCompleted", "action": "CompleteJob"}],
        }
        worker_task = {"name": "worker", "replicas": workers, "template": copy.deepcopy(template)}
        tasks = [master_task] + ([worker_task] if workers else [])
        return {
            "apiVersion": "batch.volcano.sh/v1alpha1",
            "kind": "Job",
            "metadata": _metadata(opts),
            "spec": {
                "minAvailable": opts.nodes,
                "schedulerName": "volcano",
                "queue": opts.queue,
                "maxRetry": 1,
                "plugins": {
                    "pytorch": ["--master=master", "--worker=worker", f"--port={PORTS[kind]}"],
                    "svc": [],
                    "env": [],
                },
                "policies": [
                    {"event": "PodEvicted", "action": "RestartJob"},
                    {"event": "PodFailed", "action": "AbortJob"},
                ],
                "tasks": tasks,
            },
        }
    replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
    if workers:
        replicas["Worker"] = {"replicas": workers, "restartPolicy": "Never", "template": copy.deepcopy(template)}
    if kind == "pytorchjob":
        return {
            "apiVersion": "kubeflow.org/v1",
            "kind": "PyTorchJob",
            "metadata": _metadata(opts),
            "spec": {
                "nprocPerNode": str(npus),
                "runPolicy": {
                    "cleanPodPolicy": "None",
                    "backoffLimit": 0,
                    "schedulingPolicy": {"minAvailable": opts.nodes, "queue": opts.queue},
                },
                "pytorchReplicaSpecs": replicas,
            },
        }
    return {
        "apiVersion": "mindxdl.gitee.com/v1",
        "kind": "AscendJob",
        "metadata": _metadata(opts, {"framework": "pytorch", "ring-controller.atlas": "ascend-910b"}),
        "spec": {
            "schedulerName": "volcano",
            "runPolicy": {"schedulingPolicy": {"minAvailable": opts.nodes, "queue": opts.queue}},
            "successPolicy": "AllWorkers",
            "replicaSpecs": replicas,
        },
    }


def pod_templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod template of a generated manifest, whatever its kind."""
    spec = doc.get("spec", {})
    if doc.get("kind") == "Job":
        return [task["template"] for task in spec.get("tasks", [])]
    replicas = spec.get("pytorchReplicaSpecs") or spec.get("replicaSpecs") or {}
    return [replica["template"] for replica in replicas.values()]


def validate_pod_template(template: dict[str, Any]) -> Any:
    """Load ``template`` into the Kubernetes client's ``V1PodTemplateSpec`` and require that it
    serializes back unchanged (a field the API does not know would be dropped). Returns the model."""
    from kubernetes.client import ApiClient

    client = ApiClient()
    try:
        # The client's own deserializer: the one it uses for API responses (public only for HTTP bodies).
        model = client._ApiClient__deserialize(template, "V1PodTemplateSpec")  # type: ignore[attr-defined]
    except Exception as exc:  # pydantic / ValueError, depending on the client's generation
        first = str(exc).strip().splitlines()
        raise UserError(f"the pod template is not a valid V1PodTemplateSpec: {' '.join(first[:3])}") from None
    back = client.sanitize_for_serialization(model)
    if back != template:
        raise UserError(f"the pod template does not survive the Kubernetes model: {_first_difference(template, back)}")
    return model


def _first_difference(want: Any, got: Any, path: str = "") -> str:
    if isinstance(want, dict) and isinstance(got, dict):
        for key in want:
            if key not in got:
                return f"{path}.{key} is not a field the API knows"
            diff = _first_difference(want[key], got[key], f"{path}.{key}")
            if diff:
                return diff
        return ""
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for index, (a, b) in enumerate(zip(want, got, strict=True)):
            diff = _first_difference(a, b, f"{path}[{index}]")
            if diff:
                return diff
        return ""
    return "" if want == got else f"{path or '.'}: {want!r} became {got!r}"


def render(opts: ManifestOptions, argv: Sequence[str] = ()) -> str:
    """The manifest as YAML, with a header saying how it was made and how to use it."""
    doc = manifest(opts)
    kind, npus = _check(opts)
    crd = {
        "volcano": "Volcano (batch.volcano.sh)",
        "pytorchjob": "the Kubeflow training operator",
        "ascendjob": "MindCluster's Ascend Operator",
    }
    # user text in a comment goes through one_line: a newline in an argument must not end the comment
    header = [
        "# generated by ascend-llm-stack: invoke " + one_line(shlex.join(argv))
        if argv
        else "# generated by invoke k8s",
        f"# needs {crd[kind]} and the Ascend device plugin ({opts.resource}); apply with: kubectl apply -f FILE",
        f"# {opts.nodes} node(s) x {npus} NPU(s); the stage reads its rendezvous from the launcher's environment",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)

"""Images in a registry: push a chain's layer tags, join per-arch images into manifest lists, measure pulls.

Pushes go through the engine (the Docker SDK, with the credentials ``docker login`` stored), so the
registry receives exactly what ``docker push`` sends. Manifests are read, and manifest lists written,
through the registry's HTTP API (the OCI distribution spec: Docker's registry, Harbor, Nexus, ...),
with the engine's trust and credentials: the CAs in ``/etc/docker/certs.d/<host>/*.crt`` (read per
request, as the engine does) and the login from Docker's config file or its credential helper.
Basic auth and Bearer tokens (Harbor, GitLab) are both answered; client certificates are not.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .baseimage import docker_platform
from .errors import UserError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LISTS = (DOCKER_LIST, OCI_INDEX)
ACCEPT = ", ".join((DOCKER_MANIFEST, OCI_MANIFEST, DOCKER_LIST, OCI_INDEX))
CERTS_D = Path("/etc/docker/certs.d")

# HOST[:PORT] then lower-case path components, as Docker's reference grammar allows them.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_REGISTRY = re.compile(rf"^(?P<host>{_HOST})(?P<prefix>(?:/{_COMPONENT})*)/?$")


@dataclass(frozen=True)
class RegistryRef:
    """Where ``--push``/``--registry`` puts images: a host and an optional namespace (``team/ml``)."""

    host: str
    prefix: str = ""

    def repo(self, local_ref: str) -> str:
        """The repository path in the registry of a local ``repo:tag`` (without the tag)."""
        name = local_ref.rpartition(":")[0]
        return f"{self.prefix}/{name}" if self.prefix else name

    def remote(self, local_ref: str) -> str:
        """``host/prefix/repo:tag`` for a local ``repo:tag``."""
        return f"{self.host}/{self.repo(local_ref)}:{local_ref.rpartition(':')[2]}"

    def __str__(self) -> str:
        return f"{self.host}/{self.prefix}" if self.prefix else self.host


def parse_registry(text: str, flag: str = "--push") -> RegistryRef:
    """``registry.local:5000/team`` -> RegistryRef; anything Docker would read as a Docker Hub name is refused."""
    m = _REGISTRY.match(text.strip())
    host = m.group("host") if m else ""
    # Docker reads a first component without '.' or ':' (other than localhost) as a Docker Hub namespace.
    if not m or not ("." in host or ":" in host or host == "localhost"):
        raise UserError(
            f"{flag} {text!r}: not a registry; give HOST[:PORT][/NAMESPACE] without a scheme, "
            "e.g. registry.local:5000/team"
        )
    return RegistryRef(host, m.group("prefix").strip("/"))


@dataclass(frozen=True)
class Manifest:
    """One manifest as the registry holds it: its digest, media type and the exact bytes."""

    digest: str
    media_type: str
    raw: bytes

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.raw)

    @property
    def is_list(self) -> bool:
        return self.media_type in LISTS

    def blobs(self) -> dict[str, int]:
        """Config and layer blobs of a single-platform manifest: digest -> size in bytes (as stored, compressed)."""
        d = self.data
        return {b["digest"]: int(b["size"]) for b in [d["config"], *d["layers"]]}


def _authenticate_header(value: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = value.strip().partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


class _Redirect(urllib.request.HTTPRedirectHandler):
    """Follow a blob redirect (to S3 or a CDN) without the registry's credentials: they are not that host's."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


@dataclass
class Registry:
    """A registry's HTTP API (``https://host/v2/``), with the engine's CA files and ``docker login``'s credentials."""

    host: str
    credentials: tuple[str, str] | None = field(default=None, repr=False)
    ca_files: tuple[Path, ...] = ()
    certs_d: Path = CERTS_D
    timeout: float = 120.0
    _challenge: tuple[str, dict[str, str]] | None = field(default=None, repr=False)
    _tokens: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def for_host(cls, host: str, certs_d: Path = CERTS_D) -> Registry:
        return cls(host, docker_credentials(host), certs_d=certs_d)

    def _context(self) -> ssl.SSLContext:
        """System CAs plus the host's certs.d ``*.crt``, read for every request (as the engine reads them)."""
        ctx = ssl.create_default_context()
        folder = self.certs_d / self.host
        for ca in [*self.ca_files, *(sorted(folder.glob("*.crt")) if folder.is_dir() else [])]:
            ctx.load_verify_locations(cafile=str(ca))
        return ctx

    def _basic(self) -> str | None:
        if not self.credentials:
            return None
        return "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()

    def _send(self, req: urllib.request.Request) -> tuple[int, Any, bytes]:
        try:
            opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=self._context()), _Redirect)
            with opener.open(req, timeout=self.timeout) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, err.read()
        except (TimeoutError, ConnectionError) as err:
            raise UserError(f"registry {self.host} stopped answering ({err or type(err).__name__})") from None
        except urllib.error.URLError as err:
            reason = err.reason
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise UserError(
                    f"registry {self.host}: its TLS certificate is not trusted ({reason.verify_message}); "
                    f"put its CA in {self.certs_d / self.host / 'ca.crt'}"
                ) from None
            raise UserError(f"no registry answers at https://{self.host}/v2/ ({reason})") from None

    def _token(self, params: dict[str, str], scope: str) -> str:
        """A Bearer token from the registry's token service (Harbor, GitLab, distribution with token auth)."""
        realm = params.get("realm", "")
        if not realm.startswith("https://"):
            raise UserError(f"registry {self.host}: token service {realm!r} is not https; refusing to send credentials")
        query = {k: v for k, v in (("service", params.get("service")), ("scope", scope or params.get("scope"))) if v}
        req = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(query)}")
        if basic := self._basic():
            req.add_header("Authorization", basic)
        status, _, body = self._send(req)
        if status != 200:
            raise UserError(
                f"registry {self.host}: its token service refused the login (HTTP {status}): {_login_hint(self.host)}"
            )
        try:
            data = json.loads(body)
            token = data.get("token") or data.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise UserError(f"registry {self.host}: its token service {realm} answered without a token")
        return token

    def _authorize(self, headers: dict[str, str], scope: str) -> None:
        """Answer the registry's last challenge up front: a request body sent without it is cut off by the 401."""
        if self._challenge is None:
            return
        scheme, params = self._challenge
        if scheme == "bearer":
            if scope not in self._tokens:
                self._tokens[scope] = self._token(params, scope)
            headers["Authorization"] = f"Bearer {self._tokens[scope]}"
        elif scheme == "basic":
            if (basic := self._basic()) is None:
                raise UserError(f"registry {self.host} wants a login: {_login_hint(self.host)}")
            headers["Authorization"] = basic

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str = "",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, bytes]:
        """One request to ``/v2/...``; a 401 is answered once with basic auth or a Bearer token."""
        if body is not None and self._challenge is None:
            self.request("GET", "/v2/")  # learn how to authenticate before sending a body
        url = f"https://{self.host}{path}"
        hdrs = dict(headers or {})
        self._authorize(hdrs, scope)
        status, resp_headers, data = self._send(urllib.request.Request(url, data=body, headers=hdrs, method=method))
        if status != 401:
            return status, resp_headers, data
        if "Authorization" in hdrs:
            raise UserError(f"registry {self.host} refused the credentials: {_login_hint(self.host)}")
        self._challenge = _authenticate_header(resp_headers.get("WWW-Authenticate", ""))
        self._authorize(hdrs, scope)
        if "Authorization" not in hdrs:
            raise UserError(f"registry {self.host} wants a login it cannot be given here: {_login_hint(self.host)}")
        status, resp_headers, data = self._send(urllib.request.Request(url, data=body, headers=hdrs, method=method))
        if status == 401:
            raise UserError(f"registry {self.host} refused the credentials: {_login_hint(self.host)}")
        return status, resp_headers, data

    def check(self) -> None:
        """Fail now, not after the build, when the registry is unreachable, untrusted or refuses the login."""
        status, _, _ = self.request("GET", "/v2/")
        if status != 200:
            raise UserError(f"registry {self.host}: GET /v2/ answered HTTP {status}, not 200")

    def manifest(self, repo: str, ref: str) -> Manifest | None:
        """The manifest of ``repo`` at a tag or digest; None when the registry has no such tag."""
        status, headers, raw = self.request(
            "GET", f"/v2/{repo}/manifests/{ref}", scope=f"repository:{repo}:pull", headers={"Accept": ACCEPT}
        )
        if status == 404:
            return None
        if status != 200:
            raise UserError(f"registry {self.host}: reading {repo}:{ref} answered HTTP {status}: {_errors(raw)}")
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if ref.startswith("sha256:") and ref != digest:
            raise UserError(f"registry {self.host}: {repo}@{ref} came back with digest {digest}")
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        media_type = headers.get("Content-Type", "").split(";")[0].strip()
        if isinstance(data, dict) and data.get("mediaType"):
            media_type = str(data["mediaType"])
        shape = ("manifests",) if media_type in LISTS else ("config", "layers")
        if not isinstance(data, dict) or not all(k in data for k in shape):
            raise UserError(f"registry {self.host}: {repo}:{ref} is not an image manifest or list ({media_type})")
        return Manifest(digest, media_type, raw)

    def blob(self, repo: str, digest: str) -> bytes:
        status, _, data = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=f"repository:{repo}:pull")
        if status != 200:
            raise UserError(f"registry {self.host}: blob {digest} of {repo} answered HTTP {status}: {_errors(data)}")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise UserError(f"registry {self.host}: blob {digest} of {repo} does not match its digest")
        return data

    def put_manifest(self, repo: str, tag: str, raw: bytes, media_type: str) -> str:
        status, headers, data = self.request(
            "PUT", f"/v2/{repo}/manifests/{tag}", scope=f"repository:{repo}:pull,push", body=raw,
            headers={"Content-Type": media_type},
        )  # fmt: skip
        if status not in (200, 201):
            raise UserError(f"registry {self.host}: writing {repo}:{tag} answered HTTP {status}: {_errors(data)}")
        return headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(raw).hexdigest()

    def tags(self, repo: str) -> list[str]:
        status, _, data = self.request("GET", f"/v2/{repo}/tags/list", scope=f"repository:{repo}:pull")
        if status == 404:
            return []
        if status != 200:
            raise UserError(f"registry {self.host}: listing tags of {repo} answered HTTP {status}: {_errors(data)}")
        return list(json.loads(data).get("tags") or [])


def _errors(body: bytes) -> str:
    """The registry's error messages, one line."""
    try:
        errors = json.loads(body).get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or "no error text"
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace").strip() or "no error text"


def _login_hint(host: str) -> str:
    return f"run 'docker login {host}' (this tool uses the login Docker stores)"


def docker_credentials(host: str) -> tuple[str, str] | None:
    """The user and password ``docker login HOST`` stored (config.json or a credential helper), if any."""
    import docker.auth

    auth = docker.auth.load_config().resolve_authconfig(host) or {}
    lowered = {k.lower(): v for k, v in auth.items()}
    user, password = lowered.get("username"), lowered.get("password")
    return (user, password) if user and password else None


def split_ref(ref: str) -> tuple[str, str]:
    """``repo:tag`` or ``repo@sha256:...`` (no host) -> (repo, tag or digest)."""
    if "@" in ref:
        repo, _, digest = ref.partition("@")
        return repo, digest
    repo, sep, tag = ref.rpartition(":")
    return (repo, tag) if sep and "/" not in tag else (ref, "latest")


def goarch(arch: str) -> str:
    """The project's arch name as image configs and manifest lists spell it (``aarch64`` -> ``arm64``)."""
    return docker_platform(arch).split("/", 1)[1]


# --- pushing ---------------------------------------------------------------------------------------


def _push_error(remote: str, message: str) -> str:
    host = remote.split("/", 1)[0]
    hint = ""
    if "x509" in message or "certificate" in message:
        hint = f": put the registry's CA in {CERTS_D / host / 'ca.crt'}"
    elif "unauthorized" in message or "no basic auth credentials" in message or "denied" in message:
        hint = f": {_login_hint(host)}"
    return f"push of {remote} failed: {message.strip()}{hint}"


def push(
    driver: Any, registry: RegistryRef, images: Iterable[tuple[str, str]], log: Callable[[str], None]
) -> list[tuple[str, str]]:
    """Push each ``(image ID, local repo:tag)`` as ``registry/repo:tag`` through the engine, in order.

    Returns (and logs) each remote tag with the manifest digest the registry stored, the name to pin
    in a cluster manifest. Order matters only for speed: pushing the chain from ``base`` up uploads
    each blob once, and every later tag finds its parents' layers there. The remote tag is removed
    locally afterwards, so the engine's names stay the project's.
    """
    pushed = []
    for image_id, ref in images:
        remote = registry.remote(ref)
        driver.tag(image_id, remote)
        repo, _, tag = remote.rpartition(":")
        digest = ""
        try:
            for line in driver.docker.images.push(repo, tag=tag, stream=True, decode=True):
                if "error" in line:
                    raise UserError(_push_error(remote, str(line["error"])))
                digest = line.get("aux", {}).get("Digest", digest)
        finally:
            driver.untag(remote)
        if not digest:
            raise UserError(f"push of {remote}: the engine reported no manifest digest")
        log(f"pushed {remote} {digest}")
        pushed.append((remote, digest))
    return pushed


def chain_images(plan: Any, results: Iterable[Any]) -> list[tuple[str, str]]:
    """What ``invoke build --push`` sends: each layer's content and human tag (base first), then the final tag.

    The per-layer tags let a node (or a later build) name any layer of any build; the blobs they
    share are stored once, so a node that has the previous image pulls only the changed layers.
    """
    human = {layer.name: layer.tag for layer in plan.layers}
    images = []
    for r in results:
        if r.image_id:
            images += [(r.image_id, r.content_tag), (r.image_id, human[r.name])]
            if r.name == "runtime":
                images.append((r.image_id, plan.image))
    return images


# --- manifest lists --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """A manifest list written: its remote tag, digest, and the per-arch manifest digests it names."""

    remote: str
    digest: str
    entries: dict[str, str]


def multi_arch_tag(local_ref: str, arch: str) -> str:
    """A per-arch tag without its arch: ``.../base:debian-bookworm-py3.11-aarch64`` -> ``...-py3.11``."""
    if not local_ref.endswith(f"-{arch}"):
        raise UserError(f"tag {local_ref} does not end in -{arch}: cannot name its multi-arch tag")
    return local_ref[: -len(arch) - 1]


def manifest_list(registry: Registry, ref: RegistryRef, multi: str, per_arch: dict[str, str]) -> Published:
    """Write ``multi`` (a local repo:tag) as a manifest list of the already-pushed ``per_arch`` tags.

    Each per-arch image must be in the registry, single-platform, and of the architecture its tag
    says (read from its config blob): a list that sent arm64 nodes an x86_64 image would fail only
    on the cluster. The list is read back and must come back byte for byte.
    """
    repo = ref.repo(multi)
    entries, types = [], set()
    for arch, local in per_arch.items():
        arch_repo, tag = ref.repo(local), local.rpartition(":")[2]
        if arch_repo != repo:
            raise UserError(f"{local} and {multi} are different repositories: a manifest list spans one")
        found = registry.manifest(repo, tag)
        if found is None:
            raise UserError(
                f"{ref.remote(local)} is not in the registry: build and push it first "
                f"(invoke build --arch {arch} --push {ref}, on an {arch} host or under emulation)"
            )
        if found.is_list:
            raise UserError(f"{ref.remote(local)} is already a manifest list, not a {arch} image")
        config = json.loads(registry.blob(repo, found.data["config"]["digest"]))
        platform = {"architecture": config.get("architecture"), "os": config.get("os")}
        if config.get("variant"):
            platform["variant"] = config["variant"]
        if platform["architecture"] != goarch(arch) or platform["os"] != "linux":
            raise UserError(
                f"{ref.remote(local)} is a {platform['os']}/{platform['architecture']} image, not linux/{goarch(arch)}"
            )
        entries.append({"mediaType": found.media_type, "digest": found.digest, "size": len(found.raw),
                        "platform": platform})  # fmt: skip
        types.add(found.media_type)
    media_type = DOCKER_LIST if types == {DOCKER_MANIFEST} else OCI_INDEX
    raw = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries}, indent=3).encode()
    tag = multi.rpartition(":")[2]
    digest = registry.put_manifest(repo, tag, raw, media_type)
    back = registry.manifest(repo, tag)
    if back is None or back.raw != raw or back.digest != digest:
        raise UserError(f"registry {registry.host}: {repo}:{tag} did not read back as the manifest list written")
    return Published(ref.remote(multi), digest, {arch: e["digest"] for arch, e in zip(per_arch, entries, strict=True)})


# --- what a node pulls -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PullCost:
    """What a node that already has one image downloads for another: blob bytes as stored (compressed)."""

    image_bytes: int  # config + layers of the new image: what a node without any of it pulls
    pull_bytes: int  # of those, the blobs the old image does not have
    layers: int
    new_layers: int

    @property
    def share(self) -> float:
        return self.pull_bytes / self.image_bytes if self.image_bytes else 0.0

    def __str__(self) -> str:
        return (
            f"{self.pull_bytes / 1e6:.1f} MB of {self.image_bytes / 1e6:.1f} MB ({100 * self.share:.2f} %), "
            f"{self.new_layers}/{self.layers} layers new"
        )


def image_manifest(registry: Registry, ref: str, arch: str | None = None) -> Manifest:
    """The single-platform manifest of ``repo:tag``/``repo@digest``; a manifest list is resolved for ``arch``."""
    repo, tag = split_ref(ref)
    found = registry.manifest(repo, tag)
    if found is None:
        raise UserError(f"{registry.host}/{ref} is not in the registry")
    if found.is_list:
        if arch is None:
            raise UserError(f"{registry.host}/{ref} is a manifest list: say which architecture")
        entry = next((m for m in found.data["manifests"] if m["platform"]["architecture"] == goarch(arch)), None)
        if entry is None:
            raise UserError(f"{registry.host}/{ref} has no {arch} image")
        found = registry.manifest(repo, entry["digest"])
        if found is None:
            raise UserError(f"{registry.host}/{ref} names {entry['digest']} for {arch}, which the registry lacks")
    return found


def pull_cost(registry: Registry, new: str, old: str | None, arch: str | None = None) -> PullCost:
    """Bytes a node holding ``old`` must download to run ``new`` (refs in this registry, ``repo:tag``).

    The engine downloads a blob only when it has none of that digest, so the cost is the blobs of
    ``new``'s manifest not in ``old``'s (the config counts: it is a blob too). ``old=None``: a node
    with nothing.
    """
    manifest = image_manifest(registry, new, arch)
    blobs = manifest.blobs()
    have = image_manifest(registry, old, arch).blobs() if old else {}
    missing = {d: s for d, s in blobs.items() if d not in have}
    layers = [b["digest"] for b in manifest.data["layers"]]
    return PullCost(sum(blobs.values()), sum(missing.values()), len(layers), len([d for d in layers if d in missing]))

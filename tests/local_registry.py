"""A real image registry on loopback for the tests: Debian's ``docker-registry`` with TLS, basic or token auth.

Real: the CNCF distribution registry 2.8 (Debian's docker-registry package, its binary run directly
with a config written here, never the system service), its HTTP API, TLS and htpasswd (bcrypt)
basic auth; the engine trusts it through /etc/docker/certs.d/127.0.0.1:PORT/ca.crt and logs in
with ``docker login``, as a cluster's build host would. Made here, per run: the CA and the server
certificate (for IP 127.0.0.1, valid a day), the user and a random password.

With ``token_auth`` the registry wants Bearer tokens from a token service run here (as Harbor's and
GitLab's do). Not modelled: other storage drivers, client certificates. The
engine (dockerd 20.10) treats 127.0.0.0/8 as an insecure registry whatever its config says, so it
speaks TLS to this registry without verifying it; certificate verification is proven by skopeo
and by ascend_stack.registry, which verify against the certs.d CA.

The registry binds 127.0.0.1 on a free port, is wrapped in ``timeout`` (it ends by itself even if
the test process dies) and is stopped, with its certs.d entry and every file made here (the
password's only copies: htpasswd holds its bcrypt hash, the DOCKER_CONFIG its login), when the
``with`` block ends.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

REGISTRY_BIN = "/usr/bin/docker-registry"
CERTS_D = Path("/etc/docker/certs.d")
LIFETIME_S = 3600  # the registry stops itself after this long, whatever happens to the tests


@dataclass(frozen=True)
class LocalRegistry:
    host: str  # 127.0.0.1:PORT
    user: str
    password: str
    ca: Path  # the test CA's certificate (also in certs.d)
    cert_dir: Path  # a folder with only ca.crt, for skopeo --cert-dir
    storage: Path  # the registry's filesystem storage
    docker_config: Path  # a DOCKER_CONFIG folder logged in to the registry

    def env(self) -> dict[str, str]:
        """The environment of a process that should use this registry's login (``docker``, ``invoke``)."""
        return {**os.environ, "DOCKER_CONFIG": str(self.docker_config)}

    @property
    def authfile(self) -> Path:
        return self.docker_config / "config.json"


def missing_tools() -> str | None:
    """Why the registry tests cannot run here, or None."""
    missing = [t for t in (REGISTRY_BIN, "skopeo") if not shutil.which(t)]
    return f"{' and '.join(missing)} not installed (scripts/docker-engine.sh --registry)" if missing else None


def skopeo(reg: LocalRegistry, *args: str) -> str:
    """skopeo (a second reader of the registry) with the test CA and the login file; TLS verification stays on."""
    argv = ["skopeo", *args[:1], "--cert-dir", str(reg.cert_dir), "--authfile", str(reg.authfile), *args[1:]]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_tls(root: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 signed by it: (ca.crt, server.crt, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ascend-llm-stack test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = (root / "ca.crt", root / "server.crt", root / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    paths[2].chmod(0o600)
    return paths


def _wait_until_up(url: str, ca: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Poll ``GET /v2/`` until the registry answers (401: it wants a login), or fail with its log."""
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, context=ctx, timeout=2)
            return
        except urllib.error.HTTPError as err:
            if err.code == 401:
                return
            raise
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no answer at {url} within {timeout}s: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)


def write_login(reg: LocalRegistry) -> None:
    """What ``docker login`` writes into reg's DOCKER_CONFIG, without an engine (for the engine-less tests)."""
    auth = base64.b64encode(f"{reg.user}:{reg.password}".encode()).decode()
    reg.authfile.write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
    reg.authfile.chmod(0o600)


def docker_login(reg: LocalRegistry, docker_cli: str = "docker") -> None:
    """``docker login`` into reg's DOCKER_CONFIG, through the engine (which tries the credentials on the registry)."""
    out = subprocess.run([docker_cli, "login", reg.host, "--username", reg.user, "--password-stdin"],
                         input=reg.password, env=reg.env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"docker login {reg.host} failed: {out.stderr.strip()}")


class TokenService:
    """A Bearer token service as Harbor and GitLab run one (Docker's token auth spec), on loopback over TLS.

    It checks basic auth against one user, grants exactly the scope asked for, and signs an ES256 JWT
    whose ``x5c`` header carries its self-signed certificate, which the registry trusts as its
    ``rootcertbundle``. Not modelled: refresh tokens, OAuth2 POST, per-repository permissions.
    """

    def __init__(self, root: Path, cert: Path, key: Path, user: str, password: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = dt.datetime.now(dt.timezone.utc)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ascend-llm-stack test token signer")])
        signer = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1)).sign(self.key, hashes.SHA256())
        )  # fmt: skip
        self.bundle = root / "token-signer.crt"
        self.bundle.write_bytes(signer.public_bytes(serialization.Encoding.PEM))
        self.x5c = base64.b64encode(signer.public_bytes(serialization.Encoding.DER)).decode()
        self.expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.user, self.issuer, self.service = user, "ascend-llm-stack-tests", "test-registry"
        self.issued = 0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.headers.get("Authorization") != service.expected:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                query = parse_qs(urlsplit(self.path).query)
                body = json.dumps({"token": service.token(query.get("scope", []))}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.realm = f"https://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def token(self, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": self.user, "aud": self.service, "exp": now + 600, "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}  # fmt: skip
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]}
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        self.issued += 1
        return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@contextmanager
def local_registry(
    lifetime_s: int = LIFETIME_S, engine_login: bool = False, token_auth: bool = False
) -> Iterator[LocalRegistry]:
    """Run the registry for the ``with`` block, its DOCKER_CONFIG logged in (``docker login`` through the engine
    with ``engine_login``, else written as docker login writes it). ``token_auth``: Bearer tokens from a
    :class:`TokenService` instead of htpasswd."""
    import bcrypt

    root = Path(tempfile.mkdtemp(prefix="ascend-registry-"))
    root.chmod(0o700)
    proc: subprocess.Popen[bytes] | None = None
    certs: Path | None = None
    tokens: TokenService | None = None
    try:
        ca, cert, key = _write_tls(root)
        cert_dir = root / "cert-dir"
        cert_dir.mkdir()
        shutil.copy(ca, cert_dir / "ca.crt")
        user, password = "builder", secrets.token_urlsafe(18)
        # Cost 4 (bcrypt's minimum): the registry checks the hash on every request, and a push makes hundreds.
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        (root / "htpasswd").write_text(f"{user}:{hashed}\n")
        port = _free_port()
        host = f"127.0.0.1:{port}"
        auth: dict[str, object] = {"htpasswd": {"realm": "ascend-llm-stack-tests", "path": str(root / "htpasswd")}}
        if token_auth:
            tokens = TokenService(root, cert, key, user, password)
            auth = {"token": {"realm": tokens.realm, "service": tokens.service, "issuer": tokens.issuer,
                              "rootcertbundle": str(tokens.bundle)}}  # fmt: skip
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(root / "storage")}, "delete": {"enabled": True}},
            "http": {"addr": host, "secret": secrets.token_hex(16), "tls": {"certificate": str(cert), "key": str(key)}},
            "auth": auth,
        }
        (root / "config.yml").write_text(yaml.safe_dump(config))
        log = root / "registry.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["timeout", str(lifetime_s), REGISTRY_BIN, "serve", str(root / "config.yml")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        _wait_until_up(f"https://{host}/v2/", ca, proc, log)
        certs = CERTS_D / host
        certs.mkdir(parents=True, exist_ok=True)
        shutil.copy(ca, certs / "ca.crt")
        reg = LocalRegistry(host, user, password, ca, cert_dir, root / "storage", root / "docker-config")
        reg.docker_config.mkdir(mode=0o700)
        if engine_login:
            docker_login(reg)
        else:
            write_login(reg)
        yield reg
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the group this function started: timeout and the registry
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if tokens is not None:
            tokens.stop()
        if certs is not None:
            shutil.rmtree(certs, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)

"""OCI (docker distribution) registries: where a site's container images come from, and how they are mirrored.

A site names its registry in the stack file (`sites.<name>.registry: {url, vendor, username, password}`); a
service's `image` is a path inside it (`team/web@sha256:...`), so one reference resolves at every site. This module
reads digests through the distribution API (HTTP, standard library) and copies images by digest with skopeo.
Credentials never reach a command line: skopeo and podman read them from a 0600 auth file. An ECR registry names
its `aws` provider instead of a password: `ecr_login` gets a token with GetAuthorizationToken (boto3).

Errors are provider errors named after the registry's vendor: a registry that refuses is `AuthRejected`, one that
is gone is `Unreachable`, an image it does not hold is `NotFound`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liferaft.errors import AuthRejected, NotFound, ProviderError, ToolMissing, Unreachable

MANIFEST_TYPES = ("application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
                  "application/vnd.docker.distribution.manifest.list.v2+json, "
                  "application/vnd.docker.distribution.manifest.v2+json")
DIGEST_RE = re.compile(r"@(sha256:[0-9a-f]{64})$")
TIMEOUT_S = 10.0
SecretResolver = Callable[[str], str]


@dataclass(frozen=True)
class Image:
    """An image reference split: repository path, tag, digest (either may be None)."""

    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, ref: str) -> Image:
        digest = None
        m = DIGEST_RE.search(ref)
        if m:
            digest, ref = m.group(1), ref[: m.start()]
        repo, tag = ref, None
        last = ref.rsplit("/", 1)[-1]
        if ":" in last:
            repo, tag = ref.rsplit(":", 1)
        return cls(repo, tag, digest)

    @property
    def pinned(self) -> bool:
        return self.digest is not None

    @property
    def reference(self) -> str:
        """The manifest reference to pull: the digest when pinned, else the tag (default `latest`)."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return self.repository + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


@dataclass(frozen=True)
class Registry:
    """One registry as a site names it (duck-typed from the stack model's `ImageRegistry`)."""

    url: str
    vendor: str
    username: str | None = None
    password: str | None = None  # a resolved secret: never print it

    @classmethod
    def of(cls, config: Any, secret: SecretResolver) -> Registry:
        user = secret(config.username) if getattr(config, "username", None) else None
        password = secret(config.password) if getattr(config, "password", None) else None
        return cls(str(config.url).rstrip("/"), str(config.vendor), user, password)

    @property
    def secure(self) -> bool:
        return self.url.startswith("https://")

    @property
    def host(self) -> str:
        """host[:port], what a pull reference starts with."""
        return self.url.split("://", 1)[1].split("/", 1)[0]

    @property
    def prefix(self) -> str:
        rest = self.url.split("://", 1)[1]
        return rest.split("/", 1)[1].strip("/") if "/" in rest else ""

    def repository(self, image: Image) -> str:
        return f"{self.prefix}/{image.repository}" if self.prefix else image.repository

    def pull_ref(self, image: Image, digest: str | None = None) -> str:
        """`host[:port]/[prefix/]repo@digest` (or `:tag` when neither the image nor `digest` pins it)."""
        d = digest or image.digest
        return f"{self.host}/{self.repository(image)}" + (f"@{d}" if d else f":{image.tag or 'latest'}")

    def auth_json(self) -> str | None:
        """The containers-auth.json for this registry (podman/skopeo `--authfile`), None without credentials."""
        if self.username is None:
            return None
        token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
        return json.dumps({"auths": {self.host: {"auth": token}}})

    # ------------------------------------------------------------------------------------------- the API
    def _request(self, method: str, path: str, what: str) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url.split("://", 1)[0] + "://" + self.host + path, method=method,
                                     headers={"Accept": MANIFEST_TYPES})
        if self.username is not None:
            token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=TIMEOUT_S) as r:
                return r.status, dict(r.headers.items()), r.read()
        except urllib.error.HTTPError as e:
            body = e.read()[:500]
            if e.code in (401, 403):
                raise AuthRejected(self.vendor, what, f"{self.host} answered HTTP {e.code}: "
                                   f"{body.decode(errors='replace')}", status=e.code) from None
            if e.code == 404:
                return 404, dict(e.headers.items()), body
            raise ProviderError(self.vendor, what, f"{self.host} answered HTTP {e.code}", status=e.code) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise Unreachable(self.vendor, what, f"{self.host}: {reason}") from None

    def ping(self) -> None:
        """GET /v2/: the registry answers the distribution API (raises AuthRejected / Unreachable)."""
        status, _, _ = self._request("GET", "/v2/", "registry ping")
        if status != 200:
            raise ProviderError(self.vendor, "registry ping", f"{self.host} answered HTTP {status}", status=status)

    def digest(self, image: Image, reference: str | None = None) -> str | None:
        """The manifest digest this registry holds for `image` (at `reference`: default the image's digest, else
        its tag); None when it does not hold it."""
        ref = reference or image.reference
        status, headers, _ = self._request("HEAD", f"/v2/{self.repository(image)}/manifests/{ref}",
                                           f"read the digest of {image}")
        if status == 404:
            return None
        lower = {k.lower(): v for k, v in headers.items()}
        found = lower.get("docker-content-digest")
        if not found:
            raise ProviderError(self.vendor, f"read the digest of {image}", f"{self.host} sent no digest")
        return found

    def require(self, image: Image) -> str:
        """The digest of `image` here; NotFound naming the image and the registry when it is not held."""
        found = self.digest(image)
        if found is None:
            raise NotFound(self.vendor, f"find image {image}", f"{self.host} does not hold {self.repository(image)}"
                           f"@{image.reference}", hint="mirror the stack's images there first: `liferaft "
                           "replicate` copies them by digest")
        return found


def ecr_login(aws: Any, secret: SecretResolver, vendor: str) -> tuple[str, str]:
    """ECR's registry credentials from an `aws` provider's (GetAuthorizationToken through boto3): (user, password).
    The password is a 12-hour token: never print it."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    creds = aws.credentials
    client = boto3.client(
        "ecr", region_name=aws.region, endpoint_url=aws.endpoint, aws_access_key_id=secret(creds.access_key_id),
        aws_secret_access_key=secret(creds.secret_access_key),
        aws_session_token=secret(creds.session_token) if creds.session_token else None,
        config=Config(connect_timeout=5, read_timeout=10, retries={"total_max_attempts": 2, "mode": "standard"}))
    try:
        data = client.get_authorization_token()["authorizationData"][0]
    except ClientError as e:
        err = e.response.get("Error", {})
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(err.get("Code", ""))
        detail = f"{code}: {err.get('Message', '')}"
        if status in (401, 403) or code in ("UnrecognizedClientException", "InvalidClientTokenId", "AccessDenied",
                                            "AccessDeniedException", "ExpiredTokenException", "InvalidSignatureException"):
            raise AuthRejected(vendor, "ECR login", detail, status=status, code=code) from None
        raise ProviderError(vendor, "ECR login", detail, status=status, code=code) from None
    except BotoCoreError as e:
        raise Unreachable(vendor, "ECR login", f"{type(e).__name__}: {e}") from None
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return user, password


def site_registry(stack: Any, site: str) -> Registry:
    """The registry `site` names (sites.<site>.registry), logged in: its credentials resolved, or an ECR token from
    its `provider`. UsageError when the site names none."""
    from liferaft.errors import UsageError

    config = stack.site(site).registry
    if config is None:
        raise UsageError(f"site {site!r} names no image registry, and a container service must pull its image there",
                         hint=f"add `registry: {{url: https://...}}` to sites.{site} (a registry outside the primary "
                         "vendor, for alternates), then `liferaft replicate` to mirror the images")
    if getattr(config, "provider", None):
        user, password = ecr_login(stack.provider(config.provider), stack.secret, str(config.vendor))
        return Registry(str(config.url).rstrip("/"), str(config.vendor), user, password)
    return Registry.of(config, stack.secret)


@contextmanager
def _authfiles(*registries: Registry) -> Iterator[dict[str, str]]:
    """0600 auth files for the registries that have credentials, by host; removed afterwards."""
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="liferaft-registry-") as d:
        for i, reg in enumerate(registries):
            text = reg.auth_json()
            if text is None:
                continue
            path = Path(d) / f"auth{i}.json"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            out[reg.host] = str(path)
        yield out


def copy(src: Registry, dst: Registry, image: Image, digest: str, *, timeout: float = 600.0) -> str:
    """Copy `image` at `digest` from `src` to `dst` with skopeo, keeping the digest; returns the digest at `dst`
    (the same). Tags the copy with the image's tag too when it has one."""
    exe = shutil.which("skopeo")
    if exe is None:
        raise ToolMissing("skopeo is not installed", hint="apt-get install skopeo")
    with _authfiles(src, dst) as auth:
        argv = [exe, "copy", "--quiet", "--preserve-digests", "--retry-times", "2",
                f"--src-tls-verify={'true' if src.secure else 'false'}",
                f"--dest-tls-verify={'true' if dst.secure else 'false'}"]
        if src.host in auth:
            argv += ["--src-authfile", auth[src.host]]
        if dst.host in auth:
            argv += ["--dest-authfile", auth[dst.host]]
        dest_ref = dst.pull_ref(image, digest) if image.tag is None else f"{dst.host}/{dst.repository(image)}:{image.tag}"
        argv += [f"docker://{src.pull_ref(image, digest)}", f"docker://{dest_ref}"]
        try:
            cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                                stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise Unreachable(dst.vendor, f"copy {image}", f"skopeo did not finish within {timeout:.0f}s") from None
    if cp.returncode != 0:
        err = cp.stderr.strip()[-500:]
        low = err.lower()
        vendor = src.vendor if src.host in err else dst.vendor
        if "unauthorized" in low or "denied" in low or "403" in low or "401" in low:
            raise AuthRejected(vendor, f"copy {image}", err)
        if "connection refused" in low or "no such host" in low or "timeout" in low or "connection reset" in low \
                or " eof" in low:
            raise Unreachable(vendor, f"copy {image}", err)
        if "manifest unknown" in low or "not found" in low:
            raise NotFound(vendor, f"copy {image}", err)
        raise ProviderError(vendor, f"copy {image}", err)
    got = dst.digest(image, digest)
    if got != digest:
        raise ProviderError(dst.vendor, f"copy {image}", f"{dst.host} holds {got} after the copy, not {digest}")
    return digest

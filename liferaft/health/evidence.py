"""What a health check observes: one `Evidence` per probe, and the verdict vocabulary.

Evidence is plain data (frozen, JSON-safe via `to_dict`), so verdict rules can be unit-tested from recorded
evidence without running a single probe, and `--json` output can be fed back into the rules.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Literal

from liferaft.errors import AuthRejected, NotFound, ProviderError, Throttled, Unreachable


class Verdict(str, Enum):
    """Ordered from best to worst; the value of `rank` is also the process exit code."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNREACHABLE = "unreachable"
    TERMINATED = "terminated"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def exit_code(self) -> int:
        return _RANK[self]

    @staticmethod
    def worst(verdicts: list[Verdict] | tuple[Verdict, ...]) -> Verdict:
        return max(verdicts, key=lambda v: v.rank, default=Verdict.HEALTHY)

    def __str__(self) -> str:
        return self.value


_RANK = {Verdict.HEALTHY: 0, Verdict.DEGRADED: 1, Verdict.UNREACHABLE: 2, Verdict.TERMINATED: 3}

# Probe outcomes. "ok" is the only good one; the rest say how the probe failed.
Outcome = Literal["ok", "auth_rejected", "not_found", "unreachable", "timeout", "throttled", "failed", "error"]
OUTCOMES: tuple[str, ...] = ("ok", "auth_rejected", "not_found", "unreachable", "timeout", "throttled", "failed",
                             "error")
# Outcomes meaning "nobody answered": the network path or the endpoint is gone.
SILENT = frozenset({"unreachable", "timeout"})

Plane = Literal["control", "data"]
Kind = Literal["account", "bucket", "hosts", "zone", "http", "tls", "dns", "canary"]


@dataclass(frozen=True)
class Evidence:
    """The outcome of one probe.

    `provider` is the provider the probe is about (None for a site's data plane); `site` is the site it belongs to
    (None for provider-wide probes). `error` is the liferaft error class (AuthRejected, Unreachable, ...) or the
    probe's own failure name; `status`/`code` are the HTTP status and vendor error code where there was an answer.
    """

    probe: str
    kind: str
    plane: str
    outcome: str
    provider: str | None = None
    site: str | None = None
    target: str = ""
    latency_s: float | None = None
    error: str | None = None
    status: int | None = None
    code: str | None = None
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def answered(self) -> bool:
        """Something at the other end answered (an error answer counts; silence does not)."""
        return self.outcome not in SILENT

    @property
    def subject(self) -> str:
        return f"provider:{self.provider}" if self.provider else f"site:{self.site}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["latency_s"] is not None:
            d["latency_s"] = round(d["latency_s"], 4)
        if not d["data"]:
            del d["data"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evidence:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


class ProbeFailed(Exception):
    """A probe got an answer, and the answer is wrong (HTTP 500, DNS pointing elsewhere, a certificate expiring)."""

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None,
                 outcome: str = "failed", data: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.code = code
        self.outcome = outcome
        self.data = data or {}


def classify_exception(exc: BaseException) -> tuple[str, str, int | None, str | None, str]:
    """exception -> (outcome, error class name, status, code, detail). Adapters already raise liferaft errors;
    the plain socket/urllib errors come from probes liferaft makes itself (HTTP, TLS, DNS)."""
    import urllib.error

    name = type(exc).__name__
    if isinstance(exc, ProbeFailed):
        return exc.outcome, name, exc.status, exc.code, exc.detail
    if isinstance(exc, ProviderError):
        outcome = ("auth_rejected" if isinstance(exc, AuthRejected) else
                   "not_found" if isinstance(exc, NotFound) else
                   "unreachable" if isinstance(exc, Unreachable) else
                   "throttled" if isinstance(exc, Throttled) else "error")
        if outcome == "unreachable" and "timed out" in exc.detail.lower():
            outcome = "timeout"
        return outcome, name, exc.status, exc.code, exc.detail
    if isinstance(exc, urllib.error.HTTPError):  # not raised by our http probe, kept for completeness
        return "failed", name, exc.code, None, f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return classify_exception(exc.reason) if isinstance(exc.reason, BaseException) else \
            ("unreachable", name, None, None, str(exc.reason))
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLZeroReturnError):
        return "failed", name, None, getattr(exc, "reason", None), f"TLS: {exc}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout", name, None, None, f"timed out ({exc})" if str(exc) else "timed out"
    if isinstance(exc, (ConnectionError, socket.gaierror)):
        return "unreachable", name, None, None, f"{name}: {exc}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return "unreachable", name, None, None, f"{name}: {exc}"
    return "error", name, None, None, f"{name}: {exc}"

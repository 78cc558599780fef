"""One error tree for all of liferaft.

Every error a user can meet is a `LiferaftError`. Each class carries the process exit code the CLI uses, so the
CLI (the only place that exits) maps errors to codes in one line. Third-party errors (botocore, libcloud, sockets,
ansible-runner, psycopg) are translated into these inside the adapter that met them.

Exit codes (documented in the README):
    0  ok
    1  a check failed (verification, health degraded, objective missed)
    2  usage error or invalid input (bad stack file, unknown site)
    3  provider error (auth rejected, unreachable, not found, throttled ...)
    4  a run failed or was interrupted; it can be resumed or rolled back
    5  another run holds the stack's lock
`health` keeps 0-3 for its verdicts; its errors exit 64, 69 or 78 instead (cli/_common.py, VerdictCommand).
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_PROVIDER = 3
EXIT_RUN_FAILED = 4
EXIT_LOCKED = 5


class LiferaftError(Exception):
    """Base of every error liferaft reports to a user."""

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"

    def to_dict(self) -> dict[str, object]:
        return {"error": type(self).__name__, "message": self.message, "hint": self.hint}


class UsageError(LiferaftError):
    """The user asked for something that cannot be done as asked."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Problem:
    """One problem found in an input file: where, which field, what was expected."""

    file: str
    line: int | None
    column: int | None
    path: str
    message: str
    severity: str = "error"  # or "warning"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field_ = f" {self.path}:" if self.path else ""
        return f"{where}:{field_} {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "severity": self.severity,
        }


class InvalidInput(UsageError):
    """An input file (stack file, journal, report) is invalid. Carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem], *, what: str = "stack file") -> None:
        self.problems = [p for p in problems if p.severity == "error"]
        self.warnings = [p for p in problems if p.severity != "error"]
        n = len(self.problems)
        head = f"invalid {what}: {n} error{'s' if n != 1 else ''}"
        super().__init__(head + "".join(f"\n  {p}" for p in self.problems))

    def to_dict(self) -> dict[str, object]:
        d = super().to_dict()
        d["problems"] = [p.to_dict() for p in self.problems]
        return d


class SecretError(UsageError):
    """A secret reference could not be resolved (the value itself is never shown)."""


class CheckFailed(LiferaftError):
    """A verification or check did not pass: data differs, a service is unhealthy, an objective was missed."""

    exit_code = EXIT_CHECK_FAILED


class RunFailed(LiferaftError):
    """A run stopped before finishing. Its journal says where; it can be resumed or rolled back."""

    exit_code = EXIT_RUN_FAILED


class LockHeld(LiferaftError):
    """Another run of the same stack holds the lock (or another process uses the site)."""

    exit_code = EXIT_LOCKED

    def __init__(self, message: str, *, hint: str | None = None, holder: dict[str, object] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.holder: dict[str, object] = dict(holder or {})  # what the lock file says of its holder (pid, by, ...)


class ToolMissing(UsageError):
    """An external program liferaft needs (terraform, pg_dump, ansible-playbook, node ...) is not installed."""


class ProviderError(LiferaftError):
    """A provider call failed. Says which provider, which call, and what to check."""

    exit_code = EXIT_PROVIDER
    what_to_check = "the provider's status page and liferaft's log with -v"

    def __init__(self, provider: str, operation: str, detail: str, *, hint: str | None = None,
                 status: int | None = None, code: str | None = None) -> None:
        self.provider = provider
        self.operation = operation
        self.detail = detail
        self.status = status
        self.code = code
        super().__init__(f"provider {provider!r}: {operation} failed: {detail}", hint=hint or self.what_to_check)

    def to_dict(self) -> dict[str, object]:
        d = super().to_dict()
        d.update(provider=self.provider, operation=self.operation, status=self.status, code=self.code)
        return d


class AuthRejected(ProviderError):
    """Credentials refused or the account suspended (HTTP 401/403 while the network answers)."""

    what_to_check = "the credentials referenced in the stack file, and whether the account is suspended"


class NotFound(ProviderError):
    """The resource does not exist (bucket, zone, host, object)."""

    what_to_check = "the name in the stack file, and whether the resource was deleted"


class Unreachable(ProviderError):
    """The endpoint could not be reached: connection refused, reset, timed out, DNS failure."""

    what_to_check = "the endpoint address, the network path, and the provider's status page"


class Throttled(ProviderError):
    """The provider kept answering 429/503 Slow Down after bounded retries."""

    what_to_check = "request rates; retry later"


class QuotaExceeded(ProviderError):
    """The account's limit for a resource is reached (servers, cores, IPs ...): nothing was created."""

    what_to_check = "the account's limits at the provider (ask it to raise them) or delete unused resources"


class Conflict(ProviderError):
    """The resource exists in a state that conflicts with the request (name taken, not empty, ...)."""

    what_to_check = "whether another run or person created or changed the resource"

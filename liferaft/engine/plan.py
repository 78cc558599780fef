"""The plan: an ordered DAG of steps, JSON-serialisable so it can be shown, diffed and journaled.

A plan is a pure value. It holds no secrets (only references such as a database's name in the stack file) and no
live objects: step parameters are plain JSON. Its hash covers what the plan *does* (stack, source, target, mode and
the steps) and not what it *measured* (bytes, estimate), so re-planning an unchanged stack gives the same hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from liferaft.errors import InvalidInput, Problem, UsageError

Mode = Literal["live", "cold", "standby"]
DEPLOY_MODE = "deploy"  # the first deployment of a stack at a site (`liferaft deploy`)
MODES: tuple[str, ...] = ("live", "cold", "standby", DEPLOY_MODE)  # standby: the journaled set-up of `replicate`
PLAN_FORMAT = 1


def _json_safe(value: Any, where: str) -> Any:
    """Return a deep copy of `value` made only of JSON types; raise ValueError naming the first bad field."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: keys must be strings, got {type(k).__name__}")  # noqa: TRY004
            out[k] = _json_safe(v, f"{where}.{k}")
        return out
    raise ValueError(f"{where}: {type(value).__name__} is not JSON-safe")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True)
class Step:
    """One idempotent unit of a plan. `kind` names the implementation in the step-kind registry."""

    id: str
    kind: str
    title: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    depends_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.id or not all(c.isalnum() or c in "-_.:" for c in self.id):
            raise ValueError(f"step id {self.id!r}: use letters, digits and - _ . :")
        object.__setattr__(self, "params", _json_safe(dict(self.params), f"step {self.id} params"))
        object.__setattr__(self, "depends_on", tuple(self.depends_on))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "title": self.title, "params": self.params,
                "depends_on": list(self.depends_on)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Step:
        return cls(id=d["id"], kind=d["kind"], title=d.get("title", d["id"]), params=d.get("params") or {},
                   depends_on=tuple(d.get("depends_on") or ()))


@dataclass(frozen=True)
class Plan:
    """What a move would do: the steps in execution order, what it creates, what it moves and how long it takes."""

    stack: str
    source: str
    target: str
    mode: str
    steps: tuple[Step, ...]
    resources: tuple[dict[str, Any], ...] = ()  # {"action": "allocate", "kind": "host", "name": ..., "provider": ...}
    bytes_to_move: int = 0
    estimate_s: float = 0.0
    dns_diff: tuple[dict[str, Any], ...] = ()  # {"name", "type", "ttl", "old": [...], "new": [...]}
    notes: tuple[str, ...] = ()
    # what the plan's checks found at the source that the move needs first (liferaft.datasets.base.Prerequisite as
    # dicts: dataset, check, message, fix, blocking); a blocking one stops `plan` (exit 2) and any run of the plan
    problems: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "resources", tuple(_json_safe(dict(r), "resource") for r in self.resources))
        object.__setattr__(self, "dns_diff", tuple(_json_safe(dict(r), "dns_diff") for r in self.dns_diff))
        object.__setattr__(self, "notes", tuple(self.notes))
        object.__setattr__(self, "problems", tuple(_json_safe(dict(p), "problem") for p in self.problems))
        seen: set[str] = set()
        for s in self.steps:
            if s.id in seen:
                raise ValueError(f"step id {s.id!r} appears twice")
            for dep in s.depends_on:
                if dep not in seen:  # also rules out cycles: dependencies must come earlier in the order
                    raise ValueError(f"step {s.id!r} depends on {dep!r}, which is not an earlier step")
            seen.add(s.id)

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    @property
    def blocking(self) -> tuple[dict[str, Any], ...]:
        """The problems that stop this plan until fixed."""
        return tuple(p for p in self.problems if p.get("blocking", True))

    def require_no_blocking(self) -> None:
        """Refuse (exit 2) a plan whose checks found a blocking problem: nothing is created."""
        if self.blocking:
            raise PlanBlocked(self.blocking)

    @property
    def step_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.steps)

    def _core(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "stack": self.stack, "source": self.source, "target": self.target,
                "mode": self.mode, "steps": [s.to_dict() for s in self.steps]}

    @property
    def hash(self) -> str:
        """A stable digest of what the plan does (not of what it measured)."""
        return hashlib.sha256(canonical_json(self._core()).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        d = self._core()
        d.update(hash=self.hash, resources=list(self.resources), bytes_to_move=self.bytes_to_move,
                 estimate_s=round(self.estimate_s, 1), dns_diff=list(self.dns_diff), notes=list(self.notes))
        if self.problems:
            d["problems"] = list(self.problems)
        return d

    @classmethod
    def from_dict(cls, d: Any, *, source_name: str = "plan") -> Plan:
        """Rebuild a plan from JSON; anything malformed is an InvalidInput naming the field, never a traceback."""
        try:
            if not isinstance(d, dict):
                raise ValueError("a plan must be a JSON object")  # noqa: TRY004 (reported as invalid input)
            if d.get("format", PLAN_FORMAT) != PLAN_FORMAT:
                raise ValueError(f"plan format {d.get('format')!r} is not supported (expected {PLAN_FORMAT})")
            steps = d["steps"]
            if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
                raise ValueError("steps must be a list of objects")
            plan = cls(stack=str(d["stack"]), source=str(d["source"]), target=str(d["target"]),
                       mode=str(d["mode"]), steps=tuple(Step.from_dict(s) for s in steps),
                       resources=tuple(d.get("resources") or ()), bytes_to_move=int(d.get("bytes_to_move") or 0),
                       estimate_s=float(d.get("estimate_s") or 0.0), dns_diff=tuple(d.get("dns_diff") or ()),
                       notes=tuple(str(n) for n in d.get("notes") or ()),
                       problems=tuple(d.get("problems") or ()))
        except KeyError as e:
            raise InvalidInput([Problem(source_name, None, None, str(e.args[0]), "missing field")],
                               what="plan") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise InvalidInput([Problem(source_name, None, None, "", str(e))], what="plan") from None
        if "hash" in d and d["hash"] != plan.hash:
            raise InvalidInput([Problem(source_name, None, None, "hash",
                                        f"the plan's content does not match its hash {d['hash']!r}")], what="plan")
        return plan


def problem_text(p: dict[str, Any]) -> str:
    """One problem in words: `<dataset>: <message>` and its fix."""
    return f"{p.get('dataset')}: {p.get('message')}" + (f"\n    fix: {p['fix']}" if p.get("fix") else "")


class PlanBlocked(UsageError):
    """The plan's checks found what the move needs first at the source (exit 2): nothing was created."""

    def __init__(self, problems: tuple[dict[str, Any], ...]) -> None:
        self.problems = [dict(p) for p in problems]
        n = len(self.problems)
        super().__init__(f"the plan found {n} problem{'s' if n != 1 else ''} to fix before anything is created:"
                         + "".join(f"\n  {problem_text(p)}" for p in self.problems),
                         hint="apply a fix named above (a stack key in the stack file), then plan again")

    def to_dict(self) -> dict[str, object]:
        d = super().to_dict()
        d["problems"] = self.problems
        return d


# A record's TTL is how long resolvers may keep sending clients to the old address after the cut: the plan warns when
# it takes more than this share of the RTO objective (the rest is for provisioning, data and verification).
DNS_RTO_SHARE = 0.25


def ttl_notes(cached_ttls: dict[str, int], rto_s: float) -> list[str]:
    """Warnings for records whose TTL (as resolvers cached it: the current record's, else the stack's) exceeds the
    RTO objective's share for DNS."""
    limit = rto_s * DNS_RTO_SHARE
    return [f"DNS: {fqdn} has a TTL of {ttl} s, more than {DNS_RTO_SHARE:.0%} of the RTO objective ({rto_s:g} s): "
            f"resolvers may send clients to the old address for up to {ttl} s after the cut; lower the TTL ahead "
            "of time (e.g. to 60 s)"
            for fqdn, ttl in sorted(cached_ttls.items()) if ttl > limit]


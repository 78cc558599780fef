"""Saved plans: `liferaft plan --out PLAN` writes one, `liferaft failover --plan PLAN` applies exactly that plan.

A saved plan is a JSON file holding the plan (steps and their parameters), the facts it was built from as the plan
carries them (source and target, the hosts it allocates, each DNS record's value at planning time, the bytes to
move, the notes naming the source host), the options it was planned with, and the plan's hash. Applying it re-observes
(a fresh plan from the same options) and compares: the saved plan runs only if

- the fresh plan has the same hash (the same steps with the same parameters: source host, databases, buckets, DNS
  records, target provider ...), and the same source, target and mode;
- the target's hosts are the same (name, provider, what is free there);
- every DNS record still has the value it had (someone changing a record by hand is named);
- the data to move has not grown or shrunk by more than SIZE_TOLERANCE (10 %) *and* SIZE_TOLERANCE_BYTES (64 MiB):
  a live database grows a little between review and apply, which changes no step, only the copy's duration.

Anything else is a `PlanChanged` (exit 2) naming each difference. The file holds no secret: a plan carries
references only (a database's name, a secret's reference), never a value. It is written atomically (a temporary
file renamed over) and owner-only (0600): it names hosts and addresses.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liferaft.engine.plan import Plan
from liferaft.errors import EXIT_USAGE, InvalidInput, LiferaftError, Problem

SAVED_FORMAT = 1
SIZE_TOLERANCE = 0.10
SIZE_TOLERANCE_BYTES = 64 * 1024 * 1024


class PlanChanged(LiferaftError):
    """What a saved plan was built from no longer holds: it is not applied."""

    exit_code = EXIT_USAGE

    def __init__(self, changes: list[str], path: str) -> None:
        self.changes = list(changes)
        super().__init__(f"the saved plan {path} no longer matches what is observed now, not applied:\n  - "
                         + "\n  - ".join(changes),
                         hint="review a fresh plan (`liferaft plan --to SITE --out PLAN`) and apply that one")

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "changes": self.changes}


def observed_facts(plan: Plan) -> dict[str, Any]:
    """What the plan was built from, as the plan shows it (the comparison of `changes` reads these)."""
    return {
        "source": plan.source,
        "target": plan.target,
        "mode": plan.mode,
        "hosts": [dict(r) for r in plan.resources if r.get("kind") == "host"],
        "dns": [{"name": d.get("name"), "type": d.get("type"), "values": sorted(d.get("old") or [])}
                for d in plan.dns_diff],
        "bytes_to_move": plan.bytes_to_move,
        "source_notes": [n for n in plan.notes if n.startswith("source host")],
    }


@dataclass(frozen=True)
class SavedPlan:
    plan: Plan
    options: dict[str, Any] = field(default_factory=dict)  # what `plan` was given: to, mode, ledger, source_timeout
    saved_at: float = 0.0
    observed: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"liferaft_saved_plan": SAVED_FORMAT, "hash": self.plan.hash,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.saved_at)),
                "saved_at_unix": round(self.saved_at, 3), "options": self.options,
                "observed": self.observed or observed_facts(self.plan),
                "tolerance": {"bytes_ratio": SIZE_TOLERANCE, "bytes_absolute": SIZE_TOLERANCE_BYTES},
                "plan": self.plan.to_dict()}


def save_plan(plan: Plan, path: str | os.PathLike[str], options: dict[str, Any] | None = None) -> SavedPlan:
    """Write `plan` to `path`, atomically and owner-only; return what was written."""
    saved = SavedPlan(plan, dict(options or {}), time.time(), observed_facts(plan))
    target = Path(path)
    text = json.dumps(saved.to_dict(), indent=2, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent or Path(".")))
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename is durable once the folder is synced
        dfd = os.open(str(target.parent or Path(".")), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return saved


def is_saved_plan_file(ref: str) -> bool:
    """Is `ref` a path to a file (a saved plan), not a run id? A run id never names a file that exists."""
    return Path(ref).is_file()


def load_plan(path: str | os.PathLike[str]) -> SavedPlan:
    """Read a saved plan; anything malformed or tampered with (the plan no longer matches its hash) is an
    InvalidInput naming the file."""
    name = str(path)
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidInput([Problem(name, None, None, "", f"cannot read the saved plan: {e.strerror or e}")],
                           what="saved plan") from None
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise InvalidInput([Problem(name, None, None, "", f"not JSON: {e}")], what="saved plan") from None
    if not isinstance(doc, dict) or doc.get("liferaft_saved_plan") != SAVED_FORMAT:
        raise InvalidInput([Problem(name, None, None, "liferaft_saved_plan",
                                    f"not a saved plan of format {SAVED_FORMAT} (write one with "
                                    "`liferaft plan --to SITE --out PLAN`)")], what="saved plan")
    plan = Plan.from_dict(doc.get("plan"), source_name=name)  # checks the plan's own hash
    if doc.get("hash") != plan.hash:
        raise InvalidInput([Problem(name, None, None, "hash", f"the plan's steps do not match the saved hash "
                                                              f"{doc.get('hash')!r}")], what="saved plan")
    options: dict[str, Any] = doc["options"] if isinstance(doc.get("options"), dict) else {}
    observed: dict[str, Any] = doc["observed"] if isinstance(doc.get("observed"), dict) else {}
    if observed != observed_facts(plan):
        raise InvalidInput([Problem(name, None, None, "observed", "the observed facts do not match the plan's "
                                                                  "(edited by hand?)")], what="saved plan")
    return SavedPlan(plan, options, float(doc.get("saved_at_unix") or 0.0), observed)


def _size_changed(saved: int, now: int) -> bool:
    diff = abs(now - saved)
    return diff > SIZE_TOLERANCE * max(saved, 1) and diff > SIZE_TOLERANCE_BYTES


def changes(saved: SavedPlan, fresh: Plan) -> list[str]:
    """What differs between the saved plan's facts and a fresh plan's, in words; [] when the saved plan holds."""
    old, new = saved.plan, fresh
    out: list[str] = []
    if old.stack != new.stack:
        out.append(f"stack: the plan is for {old.stack!r}, this is {new.stack!r}")
    for what in ("source", "target", "mode"):
        if getattr(old, what) != getattr(new, what):
            out.append(f"{what}: {getattr(old, what)} when planned, {getattr(new, what)} now")
    before, now = observed_facts(old), observed_facts(new)
    if before["source_notes"] != now["source_notes"]:
        out.append(f"source: {'; '.join(before['source_notes']) or '-'} when planned, "
                   f"{'; '.join(now['source_notes']) or '-'} now")
    if before["hosts"] != now["hosts"]:
        def fmt(hs: list[dict[str, Any]]) -> str:
            return ", ".join(f"{h.get('name')} at {h.get('provider')} {h.get('detail') or ''}".strip() for h in hs)

        out.append(f"target hosts: {fmt(before['hosts']) or '-'} when planned, {fmt(now['hosts']) or '-'} now")
    dns_then = {(d["name"], d["type"]): d["values"] for d in before["dns"]}
    dns_now = {(d["name"], d["type"]): d["values"] for d in now["dns"]}
    for key in sorted(set(dns_then) | set(dns_now), key=str):
        if dns_then.get(key) != dns_now.get(key):
            then = ", ".join(dns_then.get(key) or []) or "(none)" if key in dns_then else "(not in the plan)"
            cur = ", ".join(dns_now.get(key) or []) or "(none)" if key in dns_now else "(not in the plan)"
            out.append(f"DNS {key[0]} {key[1]}: {then} when planned, {cur} now")
    if _size_changed(old.bytes_to_move, new.bytes_to_move):
        out.append(f"data to move: {old.bytes_to_move} bytes when planned, {new.bytes_to_move} now (more than "
                   f"{SIZE_TOLERANCE:.0%} and {SIZE_TOLERANCE_BYTES // (1024 * 1024)} MiB apart)")
    if old.hash != new.hash:
        out.append(f"steps: plan hash {old.hash} when planned, {new.hash} now ({_step_diff(old, new)})")
    return out


def _step_diff(old: Plan, new: Plan) -> str:
    a = {s.id: s for s in old.steps}
    b = {s.id: s for s in new.steps}
    parts = []
    if gone := [sid for sid in a if sid not in b]:
        parts.append("gone: " + ", ".join(gone))
    if added := [sid for sid in b if sid not in a]:
        parts.append("new: " + ", ".join(added))
    if changed := [sid for sid in a if sid in b and a[sid].to_dict() != b[sid].to_dict()]:
        parts.append("changed: " + ", ".join(changed))
    if not parts and old.step_ids != new.step_ids:
        parts.append("order changed")
    return "; ".join(parts) or "plan header changed"

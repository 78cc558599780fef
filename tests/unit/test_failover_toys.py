"""Toy step kinds for the engine's tests, and a tiny entry point so a real subprocess can run (and die in) a plan.

`python -m tests.unit.test_failover_toys start STATE_DIR PLAN_FILE` runs a plan; `hold-lock STATE_DIR STACK`
takes the stack's lock and sleeps; `hold-site STATE_DIR STACK SITE BY` takes a site's lock (as BY) and sleeps.
The kinds act on files so every effect can be checked from outside.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from liferaft.engine import Plan, RunContext, Runner, Step, StepKind, register
from liferaft.errors import CheckFailed


def _log(step: Step, what: str) -> None:
    with open(step.params["calls"], "a", encoding="utf-8") as f:
        f.write(f"{what} {step.id}\n")
        f.flush()
        os.fsync(f.fileno())


@register
class ToyFile(StepKind):
    """Write a file (if absent); undo removes it."""

    name = "toy.file"
    undoable = True

    def preview(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        return {"exists": Path(step.params["path"]).exists()}

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        _log(step, "apply")
        p = Path(step.params["path"])
        if not p.exists():
            p.write_text(step.params.get("text", step.id))
        return {"path": str(p), "size": p.stat().st_size}

    def verify(self, ctx: RunContext, step: Step) -> None:
        if Path(step.params["path"]).read_text() != step.params.get("text", step.id):
            raise CheckFailed(f"{step.params['path']} differs")

    def undo(self, ctx: RunContext, step: Step) -> None:
        _log(step, "undo")
        Path(step.params["path"]).unlink(missing_ok=True)


@register
class ToyDns(StepKind):
    """Replace a 'record' file's content, remembering the previous value first; undo restores it (undo first)."""

    name = "toy.dns"
    undoable = True
    undo_first = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        _log(step, "apply")
        p = Path(step.params["path"])
        if "previous" not in ctx.memo:
            ctx.remember(previous=p.read_text() if p.exists() else None)
        p.write_text(step.params["value"])
        return {"value": step.params["value"]}

    def undo(self, ctx: RunContext, step: Step) -> None:
        _log(step, "undo")
        previous = ctx.memo.get("previous")
        p = Path(step.params["path"])
        if previous is None:
            p.unlink(missing_ok=True)
        else:
            p.write_text(previous)


@register
class ToyGate(StepKind):
    """A verification gate: passes only when the expected file exists."""

    name = "toy.gate"
    gate = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        _log(step, "apply")
        return {}

    def verify(self, ctx: RunContext, step: Step) -> None:
        if not Path(step.params["expect"]).exists():
            raise CheckFailed(f"data differs: {step.params['expect']} is missing on the target")


@register
class ToyCopy(StepKind):
    """Copy chunks one by one into a folder; SIGKILLs its own process halfway once when TOY_CRASH_IN names it."""

    name = "toy.copy"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        _log(step, "apply")
        out = Path(step.params["dir"])
        out.mkdir(exist_ok=True)
        n = int(step.params["chunks"])
        for i in range(n):
            part = out / f"chunk-{i:03d}"
            if not part.exists():
                tmp = part.with_suffix(".tmp")
                tmp.write_text(f"{i}\n")
                tmp.rename(part)
            ctx.emit("toy.progress", f"chunk {i + 1}/{n}", done=i + 1, total=n)
            if i == n // 2 and os.environ.get("TOY_CRASH_IN") == step.id and not (out / ".crashed").exists():
                (out / ".crashed").write_text("")
                os.kill(os.getpid(), signal.SIGKILL)
        return {"chunks": len(list(out.glob("chunk-*")))}

    def verify(self, ctx: RunContext, step: Step) -> None:
        got = len(list(Path(step.params["dir"]).glob("chunk-*")))
        if got != int(step.params["chunks"]):
            raise CheckFailed(f"{got} chunks, expected {step.params['chunks']}")


def toy_plan(tmp: Path, *, stack: str = "toy", gate_expect: Path | None = None) -> Plan:
    """file a -> copy -> file b -> gate -> dns -> file c."""
    calls = str(tmp / "calls.log")
    steps = [
        Step("make-a", "toy.file", "make a", {"path": str(tmp / "a"), "calls": calls}),
        Step("copy", "toy.copy", "copy chunks", {"dir": str(tmp / "copy"), "chunks": 10, "calls": calls},
             ("make-a",)),
        Step("make-b", "toy.file", "make b", {"path": str(tmp / "b"), "calls": calls}, ("copy",)),
        Step("gate", "toy.gate", "verify", {"expect": str(gate_expect or tmp / "b"), "calls": calls}, ("make-b",)),
        Step("dns", "toy.dns", "cut over", {"path": str(tmp / "record"), "value": "new", "calls": calls},
             ("gate",)),
        Step("make-c", "toy.file", "make c", {"path": str(tmp / "c"), "calls": calls}, ("dns",)),
    ]
    return Plan(stack=stack, source="here", target="there", mode="live", steps=tuple(steps),
                resources=({"action": "create", "kind": "file", "name": "a", "provider": "tmp"},),
                bytes_to_move=10, estimate_s=1.0,
                dns_diff=({"name": "record", "type": "A", "old": ["old"], "new": ["new"]},))


def main(argv: list[str]) -> int:
    if argv[0] == "start":
        plan = Plan.from_dict(json.loads(Path(argv[2]).read_text()))
        out = Runner(Path(argv[1]), stack_name=plan.stack).start(plan)
        print(json.dumps(out.to_dict()))
        return 0
    if argv[0] == "hold-lock":
        from liferaft.engine import StackLock

        with StackLock(Path(argv[1]), argv[2]).acquire("holder"):
            print("locked", flush=True)
            time.sleep(60)
        return 0
    if argv[0] == "hold-site":
        from liferaft.engine import SiteLock

        with SiteLock(Path(argv[1]), argv[2], argv[3]).acquire(by=argv[4]):
            print("locked", flush=True)
            time.sleep(60)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

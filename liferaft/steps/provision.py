"""The failover step that provisions a `provision: terraform` site: apply the shipped module; undo = destroy."""

from __future__ import annotations

from typing import Any

from liferaft.engine.kinds import StepKind, register
from liferaft.engine.plan import Step
from liferaft.engine.runner import RunContext
from liferaft.events import Events


def _events(ctx: RunContext) -> Events:
    return Events(lambda e: ctx.emit(e.kind, e.message, **e.data))


@register
class Provision(StepKind):
    """terraform init/plan/apply of the site's module. Idempotent: a re-apply changes nothing."""

    name = "site.provision"
    undoable = True

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        from liferaft.terraform.provision import provision_site

        ctx.remember(applied=True)  # before acting: an interrupted apply is still destroyed on rollback
        done = provision_site(ctx.require_stack(), step.params["site"], ctx.state_dir, _events(ctx), ctx.secret)
        return {"hosts": list(done.hosts), "buckets": list(done.buckets), "terraform_plan": done.plan.to_dict()}

    def undo(self, ctx: RunContext, step: Step) -> None:
        from liferaft.terraform.provision import destroy_site

        if ctx.memo.get("applied"):
            destroy_site(ctx.require_stack(), step.params["site"], ctx.state_dir, _events(ctx), ctx.secret)

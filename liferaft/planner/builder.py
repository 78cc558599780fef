"""The one plan builder: a pure function of (stack, source, target, what the mode is built from) giving the steps.

Every mode is the same skeleton -- a host, its preparation, each dataset's steps, each service's, DNS, the service
check -- with what differs said by the mode:

    mode      built from                              the datasets' steps                      the services
    live      `Live`: what was observed (read-only)   playbooks their kinds need, `db-access`,  deploy-<svc>
              at the source and the target            a seed each, the freeze, the data gate
    cold      `Cold`: the standby record, DNS, the    each standby copy promoted (its kind's   start-<svc> (warm, current)
              target's free hosts, probe notes        promote step), the data-loss report      else deploy-<svc>
    standby   `Setup`: the source host, the record    install-<kind>, keep-<key>               warm-<svc> (warm tier)
    deploy    `Deploy`: who the site's data must      create-<group> (kinds with `create`),    deploy-<svc> (the
              admit, DNS as it is, the free hosts     else their playbooks; no copy           service makes its schema)

The drill (notice and no-notice) is a transform of a live or a cold plan (liferaft.drill.plan). Observing, reading the
record and probing the source are the callers' (liferaft.failover, liferaft.standby): nothing here reads anything.

Estimates come from throughput measured in the lab on this project's reference machine (2 cores, shared); they
are deliberately simple and documented so an operator can tell where a number came from. Each dataset kind gives
its own (liferaft.datasets.postgres: logical initial sync 34 s/GB, pg_dump -Fd | pg_restore 22 s/GB, tables hashed
at 12.6 s/GB; liferaft.datasets.bucket: 100 objects/s for small objects, 150 MB/s for large ones, copied then read
back); here:

    Ansible        prepare ~6 s, each playbook a kind of data needs (PostgreSQL) ~15 s, each service ~10 s
    fixed          allocation, DNS and the service check ~5 s
    cold           allocation 2 s, prepare 6 s, each promotion 1 s, each deploy 10 s, each start 2 s, DNS 1 s,
                   the service check 2 s
    deploy         as live, without the copies: fixed 5 s, prepare 6 s, each kind's data 15 s, each service 10 s
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from liferaft.datasets import Dataset, kind_of
from liferaft.datasets.base import Size, StandbySides, kind_named, record_group
from liferaft.datasets.registry import by_kind, datasets, grouped
from liferaft.engine.kinds import get_kind
from liferaft.engine.observe import Observed
from liferaft.engine.plan import DEPLOY_MODE, Plan, Step, ttl_notes
from liferaft.engine.standby_state import StandbyRecord
from liferaft.planner.tiers import standby_tier, tier_note, warm_current, warm_services
from liferaft.stack.model import service_order
from liferaft.steps.data import (
    DataPrepare,
    DataRelease,
    DataSeed,
    DataServer,
    DatasetsParams,
    DataSourceAccess,
    Freeze,
    SeedParams,
    ServerParams,
    VerifyData,
    VerifyParams,
)
from liferaft.steps.deploy import DataCreate, DeployChanges, InstallService
from liferaft.steps.hosts import Allocate, Configure, DeployService
from liferaft.steps.provision import Provision
from liferaft.steps.standby import DataLoss, InstallStandby, KeepStandby, ReleaseStandby, dataset_params
from liferaft.steps.tls import tls_steps
from liferaft.steps.verify import DnsCutover, VerifyService
from liferaft.steps.warm import KeepServiceWarm, StartService

if TYPE_CHECKING:
    from liferaft.stack import Stack

STANDBY_MODE = "standby"

ANSIBLE_PREPARE_S = 6.0
ANSIBLE_PLAYBOOK_S = 15.0  # each playbook a kind of data needs on the target (PostgreSQL)
ANSIBLE_SERVICE_S = 10.0
FIXED_S = 5.0
COLD_ESTIMATE_S = {"allocate": 2.0, "prepare": 6.0, "promote": 1.0, "deploy": 10.0, "start": 2.0, "dns": 1.0,
                   "verify": 2.0}


@dataclass(frozen=True)
class Live:
    """A live failover: the source answers; what was observed of it and the target (read-only)."""

    observed: Observed
    ledger: str | None = None  # a write ledger (a path) whose acknowledged writes the data gate looks up
    mode: str = "live"


@dataclass(frozen=True)
class Cold:
    """A cold failover from the standby `replicate` keeps: its record, and what planning read besides."""

    record: StandbyRecord
    dns_current: dict[str, dict[str, Any]] = field(default_factory=dict)
    free: tuple[str, ...] = ()  # free hosts at the target's compute provider
    notes: tuple[str, ...] = ()  # what the source probe and the DNS read said
    ledger: str | None = None


@dataclass(frozen=True)
class Setup:
    """The standby's set-up at the target (journaled, mode `standby`): the source host found, the record read."""

    source_host: dict[str, Any]
    record: dict[str, Any]
    source_timeout: float
    interval: float
    problems: tuple[dict[str, Any], ...] = ()  # what the kinds' checks found at the source (planner.prereq)


@dataclass(frozen=True)
class Deploy:
    """The first deployment of the stack at a site (mode `deploy`; the site is both source and target): who the
    site's data must admit besides this controller (CIDRs: the hosts the stack's other sites declare, so that they
    can replicate from it later), the DNS records as they are, the free hosts and the next one's address."""

    allow_from: tuple[str, ...] = ()
    dns_current: dict[str, dict[str, Any]] = field(default_factory=dict)
    free: tuple[str, ...] = ()
    preview: str | None = None
    notes: tuple[str, ...] = ()


def build(stack: Stack, source: str, target: str, inputs: Live | Cold | Setup | Deploy) -> Plan:
    """The plan of the mode `inputs` says, from `source` to `target`."""
    b = _Builder(stack, source, target)
    if isinstance(inputs, Live):
        return _live(b, inputs)
    if isinstance(inputs, Cold):
        return _cold(b, inputs)
    if isinstance(inputs, Deploy):
        return _deploy(b, inputs)
    return _setup(b, inputs)


def standby_spec_name(stack: Stack, target: str) -> str:
    """The host name every mode allocates at `target` (so a failover lands on the standby host with the copy)."""
    return f"{stack.model.name}-{target}"


class _Builder:
    """The skeleton every mode shares: steps added in order, the host, its preparation, the certificates, the
    services, DNS and the service check, the DNS diff and the plan."""

    def __init__(self, stack: Stack, source: str, target: str) -> None:
        self.stack = stack
        self.m = stack.model
        self.source = source
        self.target = target
        self.dss = datasets(stack)
        self.steps: list[Step] = []
        dns = self.m.dns
        self.records: list[dict[str, Any]] = [] if dns is None else [
            {"fqdn": dns.fqdn(r.name), "type": r.type, "ttl": r.ttl, "service": r.service}
            for r in dns.records if r.service]

    def add(self, sid: str, kind: str, title: str, params: dict[str, Any], *deps: str) -> str:
        self.steps.append(Step(sid, kind, title, params, tuple(dict.fromkeys(deps))))
        return sid

    def allocate(self, title: str, params: dict[str, Any], *deps: str) -> str:
        return self.add("allocate", Allocate.name, title, params, *deps)

    def site_hosts(self, *, report_new: bool = False) -> tuple[str, str, int]:
        """The target site's hosts, as live and deploy allocate them: (the allocation step, the first host's name,
        how many). Terraform sites are provisioned first (all N hosts; the allocation finds the first)."""
        stack, target = self.stack, self.target
        tgt_site = stack.site(target)
        host_name = standby_spec_name(stack, target)
        alloc_deps: tuple[str, ...] = ()
        if tgt_site.provision == "terraform":
            alloc_deps = (self.add("provision", Provision.name, f"provision site {target} with Terraform "
                                   f"({tgt_site.hosts} host(s) at {tgt_site.compute})", {"site": target}),)
            host_name = f"{self.m.name}-{target}-0"  # the shipped modules name hosts <stack>-<site>-<n>
        count = tgt_site.hosts if tgt_site.provision == "api" else 1  # Terraform makes all N; allocation finds -0
        alloc_params: dict[str, Any] = {"provider": tgt_site.compute, "name": host_name, "site": target,
                                         **({"report_new": True} if report_new else {})}
        what = f"host {host_name}" if count == 1 else f"{count} hosts {host_name}, {host_name}-1 ..."
        alloc = self.allocate(f"allocate {what} at {tgt_site.compute}",
                              {**alloc_params, "count": count} if count > 1 else alloc_params, *alloc_deps)
        return alloc, host_name, count

    def prepare(self, after: str) -> str:
        return self.add("prepare", Configure.name, "prepare the host (prepare.yml)", {"playbook": "prepare.yml"}, after)

    def source_access(self, source_host: dict[str, Any], after: str) -> tuple[str | None, set[str]]:
        """The `source-access` step (after `after`, which gives the target's address), for the datasets whose kind
        opens the source to the target (`source_access_title`); (its id, those datasets' ids), (None, {}): none."""
        group: list[Dataset] = []
        titles: list[str] = []
        for name, items in by_kind(self.dss).items():
            title_of = getattr(kind_named(name), "source_access_title", None)
            title = title_of(self.stack, items, target=self.target) if title_of is not None else None
            if title:
                group += items
                titles.append(title)
        if not group:
            return None, set()
        sid = self.add("source-access", DataSourceAccess.name, "; ".join(titles),
                       DatasetsParams(tuple(group), source_host).to_params(), after)
        return sid, {ds.id for ds in group}

    def certificates(self, after: str) -> dict[str, str]:
        """A service with `tls:` gets its certificate on the hosts first (the app reads it when it starts): service
        -> its certificate's step, which the service's deploy or start waits for."""
        return {str(c.params["service"]): self.add(c.id, c.kind, c.title, c.params, *c.depends_on)
                for c in tls_steps(self.stack, self.target, after=after, hosts_from="allocate")}

    def services(self, step_of: Callable[[str], tuple[str, str, str, dict[str, Any]]], deps: tuple[str, ...], certs: dict[str, str]) -> list[str]:
        """One step per service, each after the steps of the services it `depends_on` (`service_order`: ties by
        name): `step_of(svc)` gives its (id, kind, title, params)."""
        ids: dict[str, str] = {}
        for svc in service_order(self.m.services):
            needs = [ids[d] for d in self.m.services[svc].depends_on if d in ids]
            ids[svc] = self.add(*step_of(svc), *deps, *([certs[svc]] if svc in certs else []), *needs)
        return list(ids.values())

    def deploy(self, svc: str, where: str = "") -> tuple[str, str, str, dict[str, Any]]:
        return (f"deploy-{svc}", DeployService.name, f"deploy service {svc} ({self.m.services[svc].runs}){where}",
                {"service": svc})

    def cutover(self, to: str, *after: str) -> str:
        """DNS cut over to the target (when the stack names records), then the service checked through it."""
        dns = self.m.dns
        if self.records and dns is not None:
            after = (self.add("dns", DnsCutover.name, f"cut DNS over: {', '.join(str(r['fqdn']) for r in self.records)}"
                              f" -> {to}", {"provider": dns.provider, "zone": dns.zone, "records": self.records},
                              *after),)
        return self.add("verify-service", VerifyService.name, "verify the service through its DNS name",
                        {"records": self.records, "nameserver": dns.nameserver if dns else None}, *after)

    def dns_diff(self, current: dict[str, dict[str, Any]], new: list[str]) -> tuple[dict[str, Any], ...]:
        return tuple({"name": r["fqdn"], "type": r["type"], "ttl": r["ttl"],
                      "old": current.get(str(r["fqdn"]), {}).get("values", []), "new": new} for r in self.records)

    def ttl_notes(self, current: dict[str, dict[str, Any]]) -> list[str]:
        return ttl_notes({str(r["fqdn"]): int(current.get(str(r["fqdn"]), {}).get("ttl") or r["ttl"])
                          for r in self.records}, self.m.objectives.rto)

    def plan(self, mode: str, resources: list[dict[str, Any]], notes: list[str], *, source: str | None = None,
             dns_diff: tuple[dict[str, Any], ...] = (), bytes_to_move: int = 0, estimate_s: float = 0.0,
             found: tuple[dict[str, Any], ...] = ()) -> Plan:
        """The plan; `found`: what the kinds' checks found at the source -- the blocking ones are the plan's
        problems, the others its notes."""
        notes = [*notes, *(f"{p.get('dataset')}: {p.get('message')}" for p in found if not p.get("blocking", True))]
        return Plan(stack=self.m.name, source=source or self.source, target=self.target, mode=mode,
                    steps=tuple(self.steps), resources=tuple(resources), bytes_to_move=bytes_to_move,
                    estimate_s=estimate_s, dns_diff=dns_diff, notes=tuple(notes),
                    problems=tuple(p for p in found if p.get("blocking", True)))


# ------------------------------------------------------------------------------------------------------------ live
def _live(b: _Builder, inp: Live) -> Plan:
    """Every dataset of the stack goes through the same steps, whatever its kind: the playbooks its kind needs on the
    target, `prepare` (the empty copy and the access the move needs), `seed` (the bulk copy, beside the service's
    deploy: a deploy needs the prepared datasets only), the freeze, the gate, the release."""
    stack, m, target, dss, obs = b.stack, b.m, b.target, b.dss, inp.observed
    src_host = obs.source_host
    tgt_site = stack.site(target)
    alloc, host_name, count = b.site_hosts()
    host_ready = b.prepare(alloc)
    # The playbooks the kinds of data need on the target (Ansible runs one at a time: `serial`).
    last = host_ready
    for playbook, kind, group in playbooks(stack, dss):
        last = b.add(playbook.removesuffix(".yml"), DataServer.name,
                     f"deploy {kind_named(kind).noun}s {', '.join(d.key for d in group)} ({playbook})",
                     ServerParams(playbook, kind, tuple(group), src_host).to_params(), last)
    prepared = last
    if dss:
        # One step prepares every dataset (the migration role is per server; an empty bucket is made in a moment).
        # Its id is the one it had when only databases needed preparing: journals and tests name it.
        prepared = b.add("db-access", DataPrepare.name, "prepare the target's data: " + "; ".join(
            kind_of(ds).titles(ds, _where(stack, ds, b.source, target))["prepare"] for ds in dss),
            DatasetsParams(tuple(dss), src_host).to_params(), last)
    access, opened = b.source_access(src_host, alloc)
    seeds: list[str] = []
    for ds in dss:
        kind = kind_of(ds)
        # A kind whose seed needs what `prepare` made (a database's schema and access) waits for it; the others
        # (buckets: the copy makes its bucket) need only the allocation and start at once. A dataset the source
        # must first be opened for (its target connects to the source) waits for that too.
        deps = (prepared if kind.seed_needs_prepare else alloc, *([access] if ds.id in opened and access else []))
        # The copies run one after another in the plan's order (each after the previous one), all of them beside
        # the service's deploy: a crash or a fault in one copy finds the later ones not started, as the journal and
        # `--stop-before` read the plan's order.
        seeds.append(b.add(f"{kind.seed_verb}-{ds.key}", DataSeed.name,
                           kind.titles(ds, _where(stack, ds, b.source, target))["seed"],
                           SeedParams(ds.key, ds.kind, src_host, {kind.summary_name: kind.summary(ds)}).to_params(),
                           *deps, *seeds[-1:]))
    certs = b.certificates(host_ready)
    # A dataset that reaches the target only inside the freeze (a dump) leaves the services nothing to start on
    # before it: they deploy after the freeze (DNS waits for them and for the gate), else beside the seeds.
    late = [ds for ds in dss if getattr(kind_of(ds), "arrives_in_freeze", lambda ds: False)(ds)]
    deploys = [] if late else b.services(b.deploy, (prepared,), certs)
    freeze = b.add("freeze", Freeze.name, "freeze writes at the source, final catch-up ("
                   + ", ".join(dict.fromkeys(f"{kind_of(ds).noun}s" for ds in dss)) + ")",
                   DatasetsParams(tuple(dss), src_host).to_params(), *((deploys + seeds) or [prepared]))
    if late:
        deploys = b.services(b.deploy, (freeze,), certs)
        which = ", ".join(f"{kind_of(ds).noun} {ds.key}" for ds in late)
        notes_late = [(f"the services deploy after the freeze ({which}: copied only inside it); the write freeze lasts "
                      "until they answer their health")]
    else:
        notes_late = []
    gate = b.add("verify-data", VerifyData.name, ("verify data: tables by count+hash, sequences, schema; objects by "
                                                  "listing and sha256 of the final delta (all were read back before "
                                                  "the freeze)" + (", write ledger" if inp.ledger else "")),
                 VerifyParams(tuple(dss), src_host, inp.ledger).to_params(), freeze)
    last = b.cutover("target", gate, *(deploys if late else []))
    released: dict[str, list[Dataset]] = {}
    for ds in dss:
        if kind_of(ds).release_id:
            released.setdefault(kind_of(ds).release_id, []).append(ds)
    for rid, group in released.items():
        b.add(rid, DataRelease.name, f"disable liferaft's access to {', '.join(d.key for d in group)} at the source "
              "and the target", DatasetsParams(tuple(group), src_host).to_params(), last)

    preview = obs.target_host_preview
    detail = f"(free: {', '.join(obs.target_free)})" if obs.target_free else ""
    offer = obs.target_offer
    if offer:
        detail = (f"{count} x {offer['server_type']} ({offer['image']}) at {offer['location']}, {offer['hourly_gross']} "
                  f"{offer['currency']}/h each "
                  f"{'before taxes' if offer.get('taxes') == 'excluded' else 'incl. VAT'}, as the provider's API "
                  "quotes it" + _total(offer, count)
                  + _quota_text(offer.get("quota")))
    resources = [{"action": "allocate" if not offer else "create", "kind": "host", "name": host_name,
                  "provider": tgt_site.compute, "detail": detail}]
    if obs.terraform:
        resources += [{"action": r["action"], "kind": "terraform", "name": r["address"], "provider": tgt_site.compute}
                      for r in obs.terraform.get("resources", [])]
    resources += [{"action": "create", "kind": kind_of(ds).noun, "name": ds.spec.name,
                   "provider": kind_of(ds).provider(stack, target)} for ds in dss]
    resources += [{"action": "deploy", "kind": "service", "name": s, "provider": tgt_site.compute}
                  for s in m.services]
    sizes = {ds.id: size_of(obs, ds) for ds in dss}
    per_noun: dict[str, list[int]] = {}
    for ds in dss:
        got = per_noun.setdefault(kind_of(ds).noun, [0, 0])
        got[0] += sizes[ds.id].bytes
        got[1] += sizes[ds.id].items
    notes = [f"source host {src_host['name']} ({src_host['address']})" + "".join(
        f"; {noun}s: {n_bytes} bytes" + (f", {n} items" if n else "") for noun, (n_bytes, n) in per_noun.items())]
    # what a kind observed beside the size (versions, warnings such as tables without a primary key)
    notes += [f"{kind_of(ds).noun} {ds.key}: {sizes[ds.id].detail}" for ds in dss if sizes[ds.id].detail]
    notes += b.ttl_notes(obs.dns_current) + notes_late
    return b.plan(inp.mode, resources, notes, found=obs.problems, bytes_to_move=sum(sz.bytes for sz in sizes.values()),
                  estimate_s=round(estimate(stack, obs), 1),
                  dns_diff=b.dns_diff(obs.dns_current, [preview] if preview else [f"<address of {host_name}>"]))


def _total(offer: dict[str, Any], count: int) -> str:
    """`; X CUR/h for all N` (nothing for one host, or a price that is not a number)."""
    try:
        each = float(offer["hourly_gross"])
    except (KeyError, TypeError, ValueError):
        return ""
    return f"; {each * count:.4f} {offer['currency']}/h for all {count}" if count > 1 else ""


def _quota_text(quota: dict[str, Any] | None) -> str:
    """The account's host limit as the plan read it: `; server_limit: 2 of 10 used`."""
    if not quota:
        return ""
    if quota.get("limit") is None:
        return f"; {quota['name']}: not published by the provider ({quota['used']} in use)"
    return f"; {quota['name']}: {quota['used']} of {quota['limit']} used"


def size_of(obs: Observed, ds: Dataset) -> Size:
    """What the plan observed of `ds`, as its kind measured it (nothing observed: 0)."""
    return Size.from_dict(obs.sizes.get(ds.id) or {})


def playbooks(stack: Stack, dss: list[Dataset]) -> list[tuple[str, str, list[Dataset]]]:
    """(playbook, kind, its datasets) for every playbook the stack's kinds of data need on the target."""
    by_kind: dict[str, list[Dataset]] = {}
    for ds in dss:
        by_kind.setdefault(ds.kind, []).append(ds)
    return [(pb, name, group) for name, group in by_kind.items()
            for pb in kind_named(name).target_playbooks(stack, group)]


def estimate(stack: Stack, obs: Observed) -> float:
    dss = datasets(stack)
    t = FIXED_S + ANSIBLE_PREPARE_S + ANSIBLE_PLAYBOOK_S * len(playbooks(stack, dss))
    t += ANSIBLE_SERVICE_S * len(stack.model.services)
    return t + sum(float(kind_of(ds).estimate_s(ds, size_of(obs, ds))) for ds in dss)


def _where(stack: Stack, ds: Dataset, source: str, target: str) -> tuple[str, str]:
    kind = kind_of(ds)
    return kind.provider(stack, source), kind.provider(stack, target)


# ------------------------------------------------------------------------------------------------------------ cold
def _cold(b: _Builder, inp: Cold) -> Plan:
    """From the standby: its host allocated again (the same name: same host, same copy), prepared (pilot-light),
    each copy promoted by its kind, the data-loss report, the services started (warm, current) or deployed, DNS."""
    stack, m, target, dss, rec = b.stack, b.m, b.target, b.dss, inp.record
    host = rec.standby_host or {}
    provider = str(host.get("provider") or stack.site(target).compute)
    spec = str(host.get("spec_name") or standby_spec_name(stack, target))
    last = b.allocate(f"allocate the standby host {spec} at {provider} (holds the copy)",
                      {"provider": provider, "name": spec, "site": target})
    tier = standby_tier(stack, target)
    warm, stale = warm_current(stack, target, rec)
    if tier != "warm":
        last = b.prepare(last)
    certs = b.certificates(last)
    sides = StandbySides(source=b.source, target=target)
    data_steps: list[str] = []  # every promotion; the data-loss report and DNS wait for them all
    needed: list[str] = []  # promotions that are not only gates: the service is deployed on them
    for ds in dss:
        kind = kind_of(ds)
        entry = dict((rec.data.get(record_group(ds)) or {}).get(ds.key) or {})
        step_kind, prefix = kind.promote_step
        snapshot = {k: entry[k] for k in ("method", "subscription") if k in entry}
        sid = b.add(f"{prefix}-{ds.key}", step_kind, kind.promote_title(stack, ds, sides, entry),
                    {**dataset_params(ds), "entry": snapshot, "source_address": rec.source_address}, last)
        data_steps.append(sid)
        if not get_kind(step_kind).gate:
            needed.append(sid)
    loss = b.add("data-loss", DataLoss.name, "report the data lost by the cut"
                 + (" (write ledger)" if inp.ledger else " (last replicated positions)"),
                 {"datasets": [dataset_params(ds) for ds in dss], "ledger": inp.ledger, "target": target},
                 *(data_steps or [last]))

    def start_or_deploy(svc: str) -> tuple[str, str, str, dict[str, Any]]:
        if svc in warm:
            return (f"start-{svc}", StartService.name, (f"start service {svc}, kept deployed and stopped at the "
                                                                   "warm standby (no playbook run)"), {"service": svc, "digest": warm[svc]})
        return b.deploy(svc, " on the standby's data")

    svc_steps = b.services(start_or_deploy, tuple(needed or [last]), certs)
    last = b.cutover("standby", *dict.fromkeys([*svc_steps, loss, *data_steps]))  # deployed, gates passed, loss said
    released = [(ds, kind_of(ds).release_standby_title(stack, [ds])) for ds in dss]
    if any(title for _, title in released):
        b.add("db-release", ReleaseStandby.name, "; ".join(dict.fromkeys(t for _, t in released if t)),
              {"datasets": [dataset_params(ds) for ds, title in released if title]}, last)

    address = str(host.get("address") or "")
    resources = [{"action": "reuse", "kind": "host", "name": spec, "provider": provider,
                  "detail": f"({host.get('name')}, {address}: the standby)"}]
    resources += [{"action": "use" if get_kind(kind_of(ds).promote_step[0]).gate else "promote",
                   "kind": kind_of(ds).noun, "name": str(ds.spec.name),
                   "provider": kind_of(ds).standby_place(stack, ds, target)} for ds in dss]
    resources += [{"action": "start" if s in warm else "deploy", "kind": "service", "name": s, "provider": provider}
                  for s in m.services]
    notes = [*inp.notes, *b.ttl_notes(inp.dns_current)]
    exposure = rec.rpo_exposure_s
    notes.append(f"standby on {host.get('name')} ({address}); last recorded RPO exposure "
                 f"{exposure if exposure is not None else '?'} s"
                 + (f"; free hosts: {', '.join(inp.free)}" if inp.free else ""))
    notes.append(tier_note(tier, warm, stale))
    est = COLD_ESTIMATE_S
    estimate_s = (est["allocate"] + (0.0 if tier == "warm" else est["prepare"]) + est["promote"] * len(needed)
                  + est["start"] * len(warm) + est["deploy"] * (len(m.services) - len(warm)) + est["dns"]
                  + est["verify"])
    return b.plan("cold", resources, notes, estimate_s=estimate_s,
                  dns_diff=b.dns_diff(inp.dns_current, [address] if address else []))


# --------------------------------------------------------------------------------------------- the standby set-up
def _setup(b: _Builder, inp: Setup) -> Plan:
    """The standby host allocated under the name every mode uses, prepared (unless a former set-up installed it),
    what each dataset kind needs there installed, each copy set up and brought current, and (warm tier) each service
    deployed there and left stopped."""
    stack, target, dss = b.stack, b.target, b.dss
    spec = standby_spec_name(stack, target)
    provider = stack.site(target).compute
    last = b.allocate(f"allocate the standby host {spec} at {provider}",
                      {"provider": provider, "name": spec, "site": target})
    recorded = (inp.record.get("standby_host") or {}).get("address")
    installed_on = inp.record.get("installed_on")
    if not (installed_on and installed_on == recorded):
        last = b.prepare(last)
    by_kind: dict[str, list[Dataset]] = {}
    for ds in dss:
        by_kind.setdefault(ds.kind, []).append(ds)
    for name, group in by_kind.items():
        title = kind_of(group[0]).install_title(stack, group)
        if title:
            last = b.add(f"install-{name}", InstallStandby.name, title,
                         {"kind": name, "datasets": [ds.key for ds in group], "source_host": inp.source_host,
                          "installed_on": installed_on}, last)
    installed = last
    access, opened = b.source_access(inp.source_host, "allocate")
    for ds in dss:
        b.add(f"keep-{ds.key}", KeepStandby.name, f"set up the standby copy of {kind_of(ds).noun} {ds.key} and bring "
              "it current", {**dataset_params(ds), "source_host": inp.source_host,
                             "source_timeout": inp.source_timeout, "interval": inp.interval}, last,
              *([access] if access and ds.id in opened else []))
    resources = [{"action": "reuse" if recorded else "allocate", "kind": "host", "name": spec, "provider": provider,
                  "detail": "the standby host"}]
    for svc, digest in warm_services(stack, target).items():
        # after the installs (playbooks never overlap on a host); beside the copies' set-up (the service is not
        # started, so it needs nothing of them yet)
        installed = b.add(f"warm-{svc}", KeepServiceWarm.name, f"deploy service {svc} at the standby and keep it "
                          f"stopped (warm tier; digest {digest[:12]})", {"service": svc, "digest": digest}, installed)
        resources.append({"action": "deploy", "kind": "service", "name": svc, "provider": provider,
                          "detail": "stopped (warm standby)"})
    return b.plan(STANDBY_MODE, resources, [(f"standby set-up at {target} from {inp.source_host.get('name')} "
                                             f"({inp.source_host.get('address')})")], source=b.m.primary,
                  found=inp.problems)


# ---------------------------------------------------------------------------------------------------------- deploy
def _deploy(b: _Builder, inp: Deploy) -> Plan:
    """The first deployment at a site: its hosts allocated (or created) as a failover allocates them, prepared;
    each kind's data made there empty (`create-<group>`, through the kind's `create`; a kind without it gets its
    target playbooks, as live does), admitting `allow_from`; buckets made; every service deployed (it makes its
    own schema); DNS records created or updated to the site's host with the stack's TTLs; the service checked
    through them; what changed counted (a second deploy changes nothing and says so)."""
    stack, m, target, dss = b.stack, b.m, b.target, b.dss
    tgt_site = stack.site(target)
    alloc, host_name, _ = b.site_hosts(report_new=True)
    prepared = last = b.prepare(alloc)
    made: list[str] = []
    for name, group in by_kind(dss).items():
        kind = kind_named(name)
        keys = ", ".join(d.key for d in group)
        if hasattr(kind, "create"):
            # after the previous one: kinds that install a server run a playbook (never two at once on a host)
            last = b.add(f"create-{kind.group}", DataCreate.name, f"create {kind.noun}s {keys} at {target}"
                         + (f" (admitting {', '.join(inp.allow_from)})" if inp.allow_from and
                            kind.target_playbooks(stack, group) else ""),
                         {"kind": name, **grouped(group), "allow_from": list(inp.allow_from)}, last)
            made.append(last)
            continue
        for playbook in kind.target_playbooks(stack, group):
            last = b.add(playbook.removesuffix(".yml"), DataServer.name,
                         f"deploy {kind.noun}s {keys} ({playbook})",
                         {**ServerParams(playbook, name, tuple(group), {}).to_params(),
                          "allow_from": list(inp.allow_from)}, last)
            made.append(last)
    certs = b.certificates(prepared)
    deploys = b.services(lambda svc: (f"deploy-{svc}", InstallService.name,
                                      f"deploy service {svc} ({m.services[svc].runs})", {"service": svc}),
                         (last,), certs)
    dns = m.dns
    after = tuple(deploys or [last])
    if b.records and dns is not None:
        after = (b.add("dns", DnsCutover.name, "create or update DNS records: " + ", ".join(
            f"{r['fqdn']} {r['type']} ttl {r['ttl']}" for r in b.records) + f" -> the host at {target}",
            {"provider": dns.provider, "zone": dns.zone, "records": b.records}, *after),)
    checked = b.add("verify-service", VerifyService.name, "verify the service through its DNS name",
                    {"records": b.records, "nameserver": dns.nameserver if dns else None}, *after)
    b.add("changes", DeployChanges.name, "count what this deploy changed", {}, checked)

    offer_detail = f"(free: {', '.join(inp.free)})" if inp.free else ""
    resources = [{"action": "allocate", "kind": "host", "name": host_name, "provider": tgt_site.compute,
                  "detail": offer_detail}]
    resources += [{"action": "create", "kind": kind_of(ds).noun, "name": ds.spec.name,
                   "provider": kind_of(ds).provider(stack, target)} for ds in dss]
    resources += [{"action": "deploy", "kind": "service", "name": s, "provider": tgt_site.compute}
                  for s in m.services]
    notes = [f"first deployment at {target}: nothing is copied (`replicate` and `failover` move data later)",
             *inp.notes]
    if inp.allow_from:
        notes.append("the site's databases admit this controller and " + ", ".join(inp.allow_from)
                     + " (the hosts the stack's other sites declare)")
    estimate_s = (FIXED_S + ANSIBLE_PREPARE_S + ANSIBLE_PLAYBOOK_S * len(made)
                  + ANSIBLE_SERVICE_S * len(m.services))
    return b.plan(DEPLOY_MODE, resources, notes, estimate_s=estimate_s,
                  dns_diff=b.dns_diff(inp.dns_current, [inp.preview] if inp.preview else
                                      [f"<address of {host_name}>"]))


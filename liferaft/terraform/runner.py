"""A small typed adapter over the terraform binary: init, plan, apply, output, destroy, with progress events.

Credentials reach terraform only through its environment (never tfvars, never argv). Provider plugins come from a
local filesystem mirror when one is found (LIFERAFT_TF_PLUGIN_MIRROR, /opt/tf-plugins, ~/.terraform.d/plugins,
/usr/share/terraform/plugins), otherwise from the registry as terraform does by default.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liferaft.errors import ProviderError, ToolMissing
from liferaft.events import Events, as_events

MIRROR_CANDIDATES = ("/opt/tf-plugins", "~/.terraform.d/plugins", "/usr/share/terraform/plugins")
INSTALL_HINT = "install Terraform >= 1.5 (https is not needed for liferaft itself; see the README's Terraform section)"


def find_terraform() -> str:
    path = os.environ.get("LIFERAFT_TERRAFORM") or shutil.which("terraform")
    if not path:
        raise ToolMissing("terraform is not installed or not on PATH", hint=INSTALL_HINT)
    return path


def find_mirror() -> Path | None:
    """The root of a provider filesystem mirror (the folder that holds registry.terraform.io), if any."""
    candidates = [os.environ.get("LIFERAFT_TF_PLUGIN_MIRROR", "")] + list(MIRROR_CANDIDATES)
    for c in candidates:
        if c and (Path(c).expanduser() / "registry.terraform.io").is_dir():
            return Path(c).expanduser()
    return None


def _mirrored_providers(mirror: Path) -> list[str]:
    root = mirror / "registry.terraform.io"
    return sorted(f"registry.terraform.io/{ns.name}/{p.name}" for ns in root.iterdir() if ns.is_dir()
                  for p in ns.iterdir() if p.is_dir())


def write_cli_config(path: Path) -> Path:
    """A terraform CLI config using the local mirror for the providers it holds and the registry for the rest."""
    mirror = find_mirror()
    if mirror is None:
        path.write_text("# no local provider mirror found: providers come from the registry\n")
        return path
    provs = json.dumps(_mirrored_providers(mirror))
    path.write_text(
        "provider_installation {\n"
        f"  filesystem_mirror {{\n    path    = {json.dumps(str(mirror))}\n    include = {provs}\n  }}\n"
        f"  direct {{\n    exclude = {provs}\n  }}\n"
        "}\n"
    )
    return path


@dataclass(frozen=True)
class TerraformPlan:
    add: int
    change: int
    remove: int
    resources: tuple[tuple[str, str], ...] = ()  # (action, address)
    plan_file: str | None = None

    @property
    def no_changes(self) -> bool:
        return self.add == 0 and self.change == 0 and self.remove == 0

    def to_dict(self) -> dict[str, Any]:
        return {"add": self.add, "change": self.change, "remove": self.remove,
                "resources": [{"action": a, "address": r} for a, r in self.resources]}


@dataclass
class Terraform:
    """One root module directory, run with a given environment (credentials) and event observer."""

    workdir: Path
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # credentials: never in a repr or traceback
    events: Events | None = None
    label: str = "terraform"  # the provider name used in error messages

    def __post_init__(self) -> None:
        self.binary = find_terraform()
        self._events = as_events(self.events)
        self.workdir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------------------------------------ commands
    def init(self) -> None:
        cli_config = write_cli_config(self.workdir / ".terraformrc.liferaft")
        out = self._run(["init", "-input=false", "-no-color"], extra_env={"TF_CLI_CONFIG_FILE": str(cli_config)})
        if out.returncode != 0:
            text = out.stdout + out.stderr
            if "provider" in text.lower() and ("could not" in text.lower() or "failed to" in text.lower()
                                               or "query available provider" in text.lower()):
                raise ToolMissing(
                    "terraform could not install a provider plugin this module needs",
                    hint="put the provider in a filesystem mirror (LIFERAFT_TF_PLUGIN_MIRROR=<dir holding "
                         "registry.terraform.io>) or allow terraform to reach its registry\n"
                         + _diagnostics(text),
                ) from None
            raise ProviderError(self.label, "terraform init", _diagnostics(text))
        self._events.emit("terraform.init", "terraform init done", dir=str(self.workdir))

    def plan(self, *, destroy: bool = False) -> TerraformPlan:
        args = ["plan", "-input=false", "-json", "-out=tfplan", "-detailed-exitcode"] + (["-destroy"] if destroy else [])
        resources: list[tuple[str, str]] = []
        summary: dict[str, int] = {}
        proc = self._stream(args)
        for msg in _json_lines(proc):
            kind = msg.get("type")
            if kind == "planned_change":
                ch = msg.get("change", {})
                resources.append((ch.get("action", "?"), ch.get("resource", {}).get("addr", "?")))
            elif kind == "change_summary":
                summary = msg.get("changes", {})
            elif kind == "diagnostic" and msg.get("@level") == "error":
                self._errors.append(msg.get("@message", ""))
        rc = proc.wait()
        if rc not in (0, 2):
            raise ProviderError(self.label, "terraform plan", "; ".join(self._errors) or f"exit {rc}")
        plan = TerraformPlan(summary.get("add", 0), summary.get("change", 0), summary.get("remove", 0),
                             tuple(resources), str(self.workdir / "tfplan"))
        self._events.emit("terraform.plan", f"terraform plan: +{plan.add} ~{plan.change} -{plan.remove}",
                          **plan.to_dict())
        return plan

    def apply(self, plan: TerraformPlan | None = None) -> None:
        args = ["apply", "-input=false", "-json", "-auto-approve"] + ([plan.plan_file] if plan and plan.plan_file
                                                                       else [])
        self._apply_like(args, "terraform apply")

    def destroy(self) -> None:
        self._apply_like(["destroy", "-input=false", "-json", "-auto-approve"], "terraform destroy")

    def output(self) -> dict[str, Any]:
        out = self._run(["output", "-json"])
        if out.returncode != 0:
            raise ProviderError(self.label, "terraform output", _diagnostics(out.stdout + out.stderr))
        return {k: v.get("value") for k, v in json.loads(out.stdout or "{}").items()}

    # ------------------------------------------------------------------------------------------------ plumbing
    def _apply_like(self, args: list[str], operation: str) -> None:
        proc = self._stream(args)
        for msg in _json_lines(proc):
            kind = msg.get("type")
            if kind in ("apply_start", "apply_progress", "apply_complete", "apply_errored"):
                addr = msg.get("hook", {}).get("resource", {}).get("addr", "")
                self._events.emit(f"terraform.{kind}", f"{addr}: {kind.split('_', 1)[1]}", resource=addr,
                                  elapsed_s=msg.get("hook", {}).get("elapsed_seconds"))
            elif kind == "diagnostic" and msg.get("@level") == "error":
                self._errors.append(msg.get("@message", "") + ": " + msg.get("diagnostic", {}).get("detail", ""))
        rc = proc.wait()
        if rc != 0:
            raise ProviderError(self.label, operation, "; ".join(self._errors) or f"exit {rc}")

    def _environment(self, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_VAR_"))}
        env.update({"TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1",
                    "TF_CLI_CONFIG_FILE": str(self.workdir / ".terraformrc.liferaft")})
        env.update(self.env)
        env.update(extra_env or {})
        return env

    def _run(self, args: list[str], extra_env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, f"-chdir={self.workdir}", *args], capture_output=True, text=True,
                              env=self._environment(extra_env), stdin=subprocess.DEVNULL, check=False)

    def _stream(self, args: list[str]) -> subprocess.Popen[str]:
        self._errors: list[str] = []
        return subprocess.Popen([self.binary, f"-chdir={self.workdir}", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=self._environment(),
                                stdin=subprocess.DEVNULL)


def _json_lines(proc: subprocess.Popen[str]) -> Iterator[dict[str, Any]]:
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.strip()
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def _diagnostics(text: str) -> str:
    lines = [ln.strip(" │╷╵") for ln in text.splitlines()]
    keep = [ln for ln in lines if ln and not ln.startswith("Initializing")]
    return "\n".join(keep[-12:])

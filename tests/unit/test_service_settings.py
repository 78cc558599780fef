"""Service settings (`services.<name>.env`) and app secrets (`services.<name>.secrets`): validated by the model,
resolved by `validate --check-secrets`, given to the playbook (secrets only through the secret-variables file) and
never journaled or emitted."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

import liferaft.steps  # noqa: F401  (registers the step library)
from liferaft.engine import Plan, RunContext, Runner, Step, StepKind
from liferaft.engine.kinds import _REGISTRY as STEP_KINDS
from liferaft.engine.kinds import register, unregister
from liferaft.errors import InvalidInput, RunFailed
from liferaft.events import Events
from liferaft.stack import load_stack
from tests.cli_helpers import invoke
from tests.unit.test_workloads import _ToyAllocate

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "microblog" / "liferaft.yaml"
SIGNING_KEY = "sk-7f3c9e21-equal-at-every-site"
SETTINGS = """    buckets: [images]       # data.buckets it uses
    env:
      MICROBLOG_TITLE: "Hello from the stack file"
      LOG_LEVEL: info
    secrets:
      SIGNING_KEY: env:LR_TEST_SIGNING_KEY
"""


def _stack_dir(tmp_path: Path, services_extra: str = SETTINGS) -> Path:
    """A copy of the example (app, fake secret files) whose `web` service has settings and an app secret."""
    d = tmp_path / "stack"
    shutil.copytree(REPO / "examples" / "microblog", d, ignore=shutil.ignore_patterns("__pycache__"))
    (d / "secrets").mkdir(exist_ok=True)
    for name in ("aws_access_key_id", "aws_secret_access_key", "db_password", "worker_redis_password", "id_ed25519",
                 "pdns_api_key",
                 "s3rver_key", "s3rver_secret"):
        (d / "secrets" / name).write_text(f"not-a-real-{name}\n")
    text = (d / "liferaft.yaml").read_text()
    old = "    buckets: [images]       # data.buckets it uses\n"
    assert old in text
    (d / "liferaft.yaml").write_text(text.replace(old, services_extra, 1))
    return d / "liferaft.yaml"


def _problems(path: Path) -> list[str]:
    with pytest.raises(InvalidInput) as exc:
        load_stack(path)
    return [str(p) for p in exc.value.problems]


# ------------------------------------------------------------------------------------------------------ the model
def test_settings_and_secret_references_load(tmp_path: Path) -> None:
    svc = load_stack(_stack_dir(tmp_path)).model.services["web"]
    assert svc.env == {"MICROBLOG_TITLE": "Hello from the stack file", "LOG_LEVEL": "info"}
    assert svc.secrets == {"SIGNING_KEY": "env:LR_TEST_SIGNING_KEY"}
    assert load_stack(EXAMPLE).model.services["web"].env == {}  # both optional


@pytest.mark.parametrize(("extra", "expected"), [
    ("    secrets:\n      SIGNING_KEY: hunter2-inline-value\n", "inline secrets are not allowed"),
    ("    env:\n      9LIVES: x\n", "a setting name of letters"),
    ("    env:\n      PORT: 8080\n", "services.web.env.PORT"),
    ("    env:\n      API_TOKEN: env:MY_TOKEN\n", "put secret references under the service's `secrets`"),
    ("    env:\n      KEY: a\n    secrets:\n      KEY: env:X\n", "both a plain setting"),
])
def test_bad_settings_are_refused_precisely(tmp_path: Path, extra: str, expected: str) -> None:
    path = _stack_dir(tmp_path, "    buckets: [images]\n" + extra)
    problems = _problems(path)
    assert any(expected in p for p in problems), problems
    assert all("hunter2-inline-value" not in p for p in problems)  # an inline secret is never echoed


def test_check_secrets_resolves_app_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _stack_dir(tmp_path)
    monkeypatch.delenv("LR_TEST_SIGNING_KEY", raising=False)
    result = invoke("validate", str(path), "--check-secrets", "--json")
    body = json.loads(result.stdout)
    assert result.exit_code == 1 and [u["field"] for u in body["unresolved_secrets"]] == [
        "services.web.secrets.SIGNING_KEY"]
    monkeypatch.setenv("LR_TEST_SIGNING_KEY", SIGNING_KEY)
    result = invoke("validate", str(path), "--check-secrets", "--json")
    assert result.exit_code == 0, result.output
    assert SIGNING_KEY not in result.output


# ------------------------------------------------------------------------------------------- playbook variables
def test_service_vars_carry_settings_in_clear_and_secrets_only_in_the_secret_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from liferaft.configure import TargetHost
    from liferaft.configure.deploy import service_vars

    monkeypatch.setenv("LR_TEST_SIGNING_KEY", SIGNING_KEY)
    stack = load_stack(_stack_dir(tmp_path))
    host = TargetHost(name="b", address="192.0.2.7", host_keys=("ssh-ed25519 AAAA",))
    sv = service_vars(stack, "web", "alt-b", host)
    assert sv.variables["liferaft_service_env"] == {"LOG_LEVEL": "info", "MICROBLOG_TITLE": "Hello from the stack file"}
    assert sv.secret_variables["liferaft_secrets"]["service"] == {"SIGNING_KEY": SIGNING_KEY}
    assert SIGNING_KEY not in json.dumps(sv.variables)
    assert SIGNING_KEY not in repr(sv)


# ---------------------------------------------------------------------------------- journal and events (engine)
class _LocalAllocate(_ToyAllocate):
    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        return {**super().apply(ctx, step), "address": "127.0.0.1"}


class _Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class _Leak(StepKind):
    """Tries to journal the app secret (as a step result): the journal must refuse it."""

    name = "toy.leak"

    def apply(self, ctx: RunContext, step: Step) -> dict[str, Any]:
        return {"value": SIGNING_KEY}


@pytest.fixture
def toy_engine() -> Any:
    real_allocate = type(STEP_KINDS["host.allocate"])
    register(_LocalAllocate)
    register(_Leak)
    server = http.server.HTTPServer(("127.0.0.1", 0), _Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        unregister("toy.leak")
        register(real_allocate)


def test_app_secrets_reach_the_playbook_only_as_secret_variables_and_never_the_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toy_engine: Any) -> None:
    """service.deploy of the playbook kind, through the engine (ansible-playbook replaced by a recorder: the lab test
    runs the real one): the secret is in the secret variables only, registered so the journal refuses it, and
    nowhere in the journal or the events."""
    import liferaft.configure

    monkeypatch.setenv("LR_TEST_SIGNING_KEY", SIGNING_KEY)
    calls: list[dict[str, Any]] = []

    def recorder(books: Any, hosts: Any, **kw: Any) -> Any:
        calls.append(kw)
        return type("R", (), {"duration_s": 0.1, "changed": 1})()

    monkeypatch.setattr(liferaft.configure, "run_playbook", recorder)
    monkeypatch.setattr("liferaft.configure.remote.controller_address", lambda toward: "192.0.2.1")
    path = _stack_dir(tmp_path)
    path.write_text(path.read_text().replace("8080", str(toy_engine)))  # the service's health: the local server
    stack = load_stack(path)
    seen: list[Any] = []
    runner = Runner(tmp_path / "state", stack=stack, events=Events(seen.append))
    steps = (Step("allocate", "host.allocate", "allocate"),
             Step("deploy-web", "service.deploy", "deploy web", {"service": "web"}, ("allocate",)),
             Step("leak", "toy.leak", "try to journal the secret", {}, ("deploy-web",)))
    with pytest.raises(RunFailed, match="contains a secret value"):
        runner.start(Plan(stack="microblog", source="primary", target="alt-b", mode="live", steps=steps))
    (call,) = calls
    assert call["variables"]["liferaft_service_env"]["MICROBLOG_TITLE"] == "Hello from the stack file"
    assert call["secret_variables"]["liferaft_secrets"]["service"] == {"SIGNING_KEY": SIGNING_KEY}
    assert SIGNING_KEY not in json.dumps(call["variables"])
    for f in (tmp_path / "state").rglob("*"):
        if f.is_file():
            assert SIGNING_KEY.encode() not in f.read_bytes(), f
    assert SIGNING_KEY not in json.dumps([e.to_dict() for e in seen], default=str)

"""Service settings and app secrets in the lab, through the real CLI: a drill deploys the example app at host b with
`services.web.env` and an app secret from `services.web.secrets`; the app's rendered config on b holds both (0600);
the secret is nowhere in liferaft's output, journal, events or reports; and `drill --teardown` leaves nothing of the
service on b -- no config file, log, code or pidfile, and no file anywhere on b holding the secret.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# the service's roots (liferaft.configure.paths), and where earlier versions put its files
SERVICE_FILES = ("/etc/liferaft/web", "/var/log/liferaft/web", "/opt/liferaft/web", "/var/lib/liferaft/web",
                 "/run/liferaft/web", "/etc/liferaft/web.json", "/var/log/liferaft/web.log", "/run/liferaft-web.pid")


def cli(stack_file: Path, state: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "liferaft", "--stack", str(stack_file), "--state-dir", str(state), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=dict(os.environ),
                          stdin=subprocess.DEVNULL)


def present(host: Any, paths: tuple[str, ...]) -> list[str]:
    out = host.run("for p in " + " ".join(paths) + "; do [ -e \"$p\" ] && echo \"$p\"; done; true").stdout
    return out.split()


def test_a_deployed_service_gets_its_settings_and_secret_and_the_teardown_leaves_none(lab: Any, tmp_path: Path) -> None:
    info = lab.info
    b = info.hosts["b"]
    secret = "sk-" + secrets.token_hex(20)
    key_file = tmp_path / "signing_key"
    key_file.write_text(secret + "\n")
    text = info.stack_file.read_text()
    old = "    buckets: [images]\n"
    assert text.count(old) == 1
    stack_file = info.stack_file.with_name("liferaft-settings.yaml")  # beside the lab's: relative paths resolve
    stack_file.write_text(text.replace(old, old + "    env:\n      MICROBLOG_TITLE: \"settings from the stack file\"\n"
                                       f"    secrets:\n      SIGNING_KEY: file:{key_file}\n"))
    state = tmp_path / "state"
    checked = cli(stack_file, state, "validate", "--check-secrets", "--json", timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    out = cli(stack_file, state, "drill", "--to", "alt-b", "--keep", "--report", str(tmp_path / "r"), "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    doc = json.loads(out.stdout)
    assert doc["kept"] is True
    try:
        conf = b.run("stat -c %a /etc/liferaft/web/config.json && cat /etc/liferaft/web/config.json").stdout
        mode, _, body = conf.partition("\n")
        assert mode == "600"
        env = json.loads(body)["env"]
        assert env == {"MICROBLOG_TITLE": "settings from the stack file", "SIGNING_KEY": secret}
        assert present(b, ("/var/log/liferaft/web/app.log", "/run/liferaft/web/web.pid")) == [
            "/var/log/liferaft/web/app.log", "/run/liferaft/web/web.pid"]  # what the teardown must remove is there
    finally:
        down = cli(stack_file, state, "drill", "--teardown", doc["run_id"], "--json", timeout=300)
    assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-3000:]
    assert json.loads(down.stdout)["torn_down"] is True

    # Nothing of the service is left on b, in particular no file holding the secret.
    assert present(b, SERVICE_FILES) == []
    holding = b.run(f"grep -rlsF -- '{secret}' /etc /opt /var/log /var/lib /run /tmp /root; true", timeout=120).stdout
    assert holding.split() == []

    # The secret never left liferaft: not in its output, its journal, its events or the drill's report.
    for text in (checked.stdout, checked.stderr, out.stdout, out.stderr, down.stdout, down.stderr):
        assert secret not in text
    for f in [*state.rglob("*"), *(tmp_path / "r").rglob("*")]:
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f

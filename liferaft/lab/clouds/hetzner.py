"""A lab Hetzner Cloud: the documented REST API subset liferaft's `hcloud` adapter uses, with real hosts behind it.

    python -m liferaft.lab.clouds.hetzner --dir D --listen ADDR --port P --tokens FILE \\
        --bridge BR --bridge-address 10.213.X.1 --lab-id ID

Endpoints (https://docs.hetzner.cloud, JSON shapes and error bodies as documented):
    /v1/servers (GET list with name / label_selector / status / page / per_page, POST), /v1/servers/{id} (GET, DELETE)
    /v1/ssh_keys, /v1/ssh_keys/{id}        /v1/firewalls, /v1/firewalls/{id}, /v1/firewalls/{id}/actions/set_rules
    /v1/actions/{id}    /v1/locations    /v1/server_types    /v1/images    /v1/pricing
Errors: `{"error": {"code", "message", "details"}}` -- 401 unauthorized (a token not in the tokens file), 403
resource_limit_exceeded (the server limit, checked before anything is created), 404 not_found, 409
uniqueness_error, 400 invalid_input. Rate limiting (429 rate_limit_exceeded) comes from the fault proxy in front.

Each server created gets a real lab host (`_machines.CloudMachines`): its own network namespace and sshd, root's
authorized_keys from the server's SSH keys, and the host key from the cloud-init user data's `ssh_keys`
(ed25519_private/ed25519_public) -- else a generated one, as an image without that key in its user data would.
Creation is asynchronous as at Hetzner: POST answers at once with status `initializing` and a running action; the
host is built by the main thread (hosts die with the thread that made them), then the server is `running`.

Lab-only control (header X-Lab-Token: the token in `<dir>/control_token`): GET /lab/state, POST /lab/settings
{"server_limit": N, "apply_user_data_host_keys": bool,
"hold_boot": bool (new servers stay `initializing`, as one that never boots, until released)}.
"""

from __future__ import annotations

import argparse
import os
import queue
import secrets
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path

from liferaft.lab.clouds._hetzner_api import HetznerState
from liferaft.lab.clouds._hetzner_http import make_handler
from liferaft.lab.clouds._machines import CloudMachines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m liferaft.lab.clouds.hetzner")
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--listen", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tokens", required=True, type=Path, help="a file of accepted API tokens, one a line")
    p.add_argument("--bridge", required=True)
    p.add_argument("--bridge-address", required=True)
    p.add_argument("--lab-id", required=True)
    args = p.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    control = secrets.token_urlsafe(18)
    fd = os.open(args.dir / "control_token", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(control)
    tokens = {t.strip() for t in args.tokens.read_text().splitlines() if t.strip()}
    jobs: queue.Queue[Callable[[], None]] = queue.Queue()
    machines = CloudMachines(args.dir / "machines", bridge=args.bridge, bridge_address=args.bridge_address,
                             lab_id=args.lab_id)
    state = HetznerState(machines, tokens, jobs)
    httpd = ThreadingHTTPServer((args.listen, args.port), make_handler(state, control))
    httpd.daemon_threads = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=httpd.serve_forever, name="hetzner-api", daemon=True).start()
    print(f"lab hetzner cloud on {args.listen}:{args.port}", flush=True)
    try:
        while not stop.is_set():  # the main thread builds and removes hosts: they die with it (pdeathsig)
            try:
                job = jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                job()
            except Exception:  # noqa: BLE001 - one failed job must not stop the cloud
                traceback.print_exc()
    finally:
        httpd.shutdown()
        problems = machines.down()
        if problems:
            print(f"teardown left: {problems}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

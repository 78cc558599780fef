"""The process shape every lab cloud shares: parse its arguments, serve its API on a thread, and build and remove
hosts on the main thread (a host dies with the thread that started it: pdeathsig)."""

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from liferaft.lab.clouds._machines import CloudMachines

Jobs = queue.Queue[Callable[[], None]]


def run_cloud(prog: str, label: str, argv: list[str] | None,
              make_state: Callable[[CloudMachines, set[str], Jobs], Any],
              make_handler: Callable[[Any, str], type[BaseHTTPRequestHandler]], **machines_kw: Any) -> int:
    """`prog --dir D --listen ADDR --port P --tokens FILE --bridge BR --bridge-address A --lab-id ID`: serve until
    SIGTERM/SIGINT, then remove every host made. `machines_kw`: the cloud's own names and addresses
    (`CloudMachines`)."""
    p = argparse.ArgumentParser(prog=prog)
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
    jobs: Jobs = queue.Queue()
    machines = CloudMachines(args.dir / "machines", bridge=args.bridge, bridge_address=args.bridge_address,
                             lab_id=args.lab_id, **machines_kw)
    state = make_state(machines, tokens, jobs)
    httpd = ThreadingHTTPServer((args.listen, args.port), make_handler(state, control))
    httpd.daemon_threads = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=httpd.serve_forever, name=f"{label}-api", daemon=True).start()
    print(f"{label} on {args.listen}:{args.port}", flush=True)
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

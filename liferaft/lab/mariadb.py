"""A MariaDB dataset in the lab: a stack variant with `data.mysql.shop`, its source server on host a, data, writes.

`liferaft lab up` does not start MariaDB (the example stack is PostgreSQL's); tests and benchmarks call:

    write_stack(info)                 -> Path of `liferaft-mariadb.yaml` in the lab dir: the lab's providers and sites,
                                         no service, one MySQL dataset `shop` (password file secrets/mysql_password)
    deploy_source(info, stack_file)   -> runs mariadb.yml on host a (the same playbook a target gets), then loads
                                         `rows` rows into a few tables (one without a primary key on request)
    Writer(conn)                      -> a thread inserting rows as the application; every acknowledged id kept
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from liferaft.lab.example import lab_target_host

KEY = "shop"
DB = "shop"
USER = "shopapp"
PORT = 3306


def write_stack(info: Any, *, name: str = "shopstack", port: int = PORT) -> Path:
    """The lab's stack file with its services, databases, buckets and DNS records replaced by one MySQL dataset."""
    doc = yaml.safe_load(Path(info.stack_file).read_text())
    pw = Path(info.secrets_dir) / "mysql_password"
    if not pw.exists():
        fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(18))
    doc["name"] = name
    doc["services"] = {}
    doc["data"] = {"mysql": {KEY: {"name": DB, "user": USER, "password": "file:secrets/mysql_password",
                                   "port": port}}}
    doc["dns"]["records"] = []
    doc["dns"]["drill_record"] = None  # no service to point a drill record at
    out = Path(info.directory) / f"liferaft-{name}.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def password(info: Any) -> str:
    return (Path(info.secrets_dir) / "mysql_password").read_text().strip()


def app_conn(info: Any, address: str, port: int = PORT) -> Any:
    from liferaft.movers.mysql import MyConn

    return MyConn(address, port, USER, password(info), DB)


def deploy_source(info: Any, stack_file: Path, *, host: str = "a", rows: int = 2000, no_pk_table: bool = True,
                  state_dir: Path | None = None) -> dict[str, Any]:
    """mariadb.yml on lab host `host` (liferaft's MariaDB, binary log on), then the shop's tables filled as its
    application account would. Returns timings."""
    from liferaft.configure import run_playbook
    from liferaft.datasets.mariadb_access import server_id
    from liferaft.movers import mysql as my
    from liferaft.stack import load_stack

    t0 = time.monotonic()
    stack = load_stack(stack_file)
    target = lab_target_host(info, host)
    spec = stack.model.data.mysql[KEY]
    run_playbook(["prepare.yml", "mariadb.yml"], [target], variables={
        "liferaft_listen_address": target.address, "liferaft_mysql_server_id": server_id(target.address),
        "liferaft_mysql": [{"key": KEY, "name": spec.name, "user": spec.user, "port": spec.port}]},
        secret_variables={"liferaft_secrets": {"mysql": {KEY: {"password": stack.secret(spec.password)}}}},
        base_dir=stack.base_dir, state_dir=state_dir or info.directory)
    t1 = time.monotonic()
    with my.connect(app_conn(info, target.address, spec.port)) as c:
        my.query(c, "CREATE TABLE IF NOT EXISTS customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT "
                    "NULL, email VARCHAR(200), note TEXT, created DATETIME(6) NOT NULL) ENGINE=InnoDB")
        my.query(c, "CREATE TABLE IF NOT EXISTS orders (id BIGINT PRIMARY KEY AUTO_INCREMENT, customer INT NOT NULL, "
                    "amount DECIMAL(12,2) NOT NULL, payload BLOB, KEY (customer)) ENGINE=InnoDB")
        if no_pk_table:
            my.query(c, "CREATE TABLE IF NOT EXISTS audit (at DATETIME NOT NULL, what VARCHAR(200)) ENGINE=InnoDB")
        customers = [(f"customer {i}", f"c{i}@example.test" if i % 7 else None, "x" * (i % 50)) for i in range(rows)]
        orders = [(1 + i % max(rows, 1), f"{i % 1000}.{i % 100:02d}", os.urandom(64)) for i in range(rows)]
        with c.cursor() as cur:
            for start in range(0, rows, 500):  # multi-row INSERTs, 500 rows each
                part = customers[start:start + 500]
                cur.execute("INSERT INTO customers (name, email, note, created) VALUES "
                            + ", ".join(["(%s, %s, %s, NOW(6))"] * len(part)), [v for r in part for v in r])
                opart = orders[start:start + 500]
                cur.execute("INSERT INTO orders (customer, amount, payload) VALUES "
                            + ", ".join(["(%s, %s, %s)"] * len(opart)), [v for r in opart for v in r])
            if no_pk_table:
                cur.execute("INSERT INTO audit VALUES " + ", ".join(["(NOW(), %s)"] * 20),
                            [f"seeded {i}" for i in range(20)])
    return {"playbook_s": round(t1 - t0, 2), "load_s": round(time.monotonic() - t1, 2)}


class Writer:
    """Inserts orders as the application at `rate` per second; every acknowledged id kept (`acked`), failures
    counted (a frozen source refuses them: read-only)."""

    def __init__(self, conn: Any, rate: float = 50.0) -> None:
        self.conn, self.rate = conn, rate
        self.acked: list[int] = []
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from liferaft.movers import mysql as my

        while not self.stop.is_set():
            try:
                with my.connect(self.conn, timeout=3, read_timeout=3) as c:
                    while not self.stop.is_set():
                        with c.cursor() as cur:
                            cur.execute("INSERT INTO orders (customer, amount, payload) VALUES (1, 1.00, %s)",
                                        (os.urandom(16),))
                            self.acked.append(int(cur.lastrowid))
                        time.sleep(1.0 / self.rate)
            except Exception:  # noqa: BLE001 - a refused write (read-only source) is counted, then retried
                self.failed += 1
                time.sleep(1.0 / self.rate)

    def finish(self) -> Writer:
        self.stop.set()
        self.thread.join(10)
        return self

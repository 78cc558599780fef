#!/usr/bin/python3
"""Ansible module: ensure owner roles (with password) and databases exist in a local PostgreSQL cluster.

Runs on the managed host as the postgres OS user (become), connecting over the unix socket with psycopg2.
Passwords are turned into SCRAM-SHA-256 verifiers here, so the cleartext never reaches the server (nor its logs) and
an unchanged password is detected by recomputing the verifier with the stored salt: re-runs report changed=false.
Arguments reach the module on stdin (pipelining), never on a command line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: liferaft_postgres
short_description: Owner roles and databases for liferaft services
options:
  socket_dir: {type: str, default: /var/run/postgresql}
  port: {type: int, default: 5432}
  databases:
    description: list of {key, name, owner, replication?}
    type: list
    elements: dict
  secrets:
    description: map key -> {password}
    type: dict
"""

ITERATIONS = 4096


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def scram_verifier(password: str, salt: bytes, iterations: int = ITERATIONS) -> str:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def password_matches(stored: str | None, password: str) -> bool:
    if not stored or not stored.startswith("SCRAM-SHA-256$"):
        return False
    try:
        iter_salt = stored.split("$")[1]
        iterations, salt = iter_salt.split(":")
        return hmac.compare_digest(scram_verifier(password, base64.b64decode(salt), int(iterations)), stored)
    except (ValueError, IndexError):
        return False


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket_dir": {"type": "str", "default": "/var/run/postgresql"},
            "port": {"type": "int", "default": 5432},
            "databases": {"type": "list", "elements": "dict", "default": []},
            "secrets": {"type": "dict", "default": {}, "no_log": True},
        },
        supports_check_mode=True,
    )
    try:
        import psycopg2
        from psycopg2 import sql
    except ImportError:
        module.fail_json(msg="python3-psycopg2 is needed on the host (apt install python3-psycopg2)")
    p = module.params
    try:
        conn = psycopg2.connect(host=p["socket_dir"], port=p["port"], dbname="postgres", connect_timeout=10)
    except psycopg2.Error as e:
        module.fail_json(msg=f"cannot connect to the local cluster: {str(e).strip()}")
    conn.autocommit = True
    changed: list[str] = []
    try:
        with conn.cursor() as cur:
            for db in p["databases"]:
                key, name, owner = db["key"], db["name"], db["owner"]
                password = (p["secrets"].get(key) or {}).get("password")
                if not password:
                    module.fail_json(msg=f"no password for database {key!r} in the secret vars")  # exits
                password = str(password)
                attrs = sql.SQL("LOGIN REPLICATION" if db.get("replication", True) else "LOGIN")
                cur.execute("SELECT rolpassword, rolcanlogin, rolreplication FROM pg_authid WHERE rolname = %s",
                            (owner,))
                row = cur.fetchone()
                if row is None:
                    changed.append(f"role {owner} created")
                    if not module.check_mode:
                        verifier = scram_verifier(password, os.urandom(16))
                        cur.execute(sql.SQL("CREATE ROLE {} {} PASSWORD {}").format(
                            sql.Identifier(owner), attrs, sql.Literal(verifier)))
                else:
                    stored, can_login, can_repl = row
                    if not password_matches(stored, password):
                        changed.append(f"role {owner} password set")
                        if not module.check_mode:
                            cur.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                                sql.Identifier(owner), sql.Literal(scram_verifier(password, os.urandom(16)))))
                    if not can_login or can_repl != bool(db.get("replication", True)):
                        changed.append(f"role {owner} attributes")
                        if not module.check_mode:
                            cur.execute(sql.SQL("ALTER ROLE {} {}").format(sql.Identifier(owner), attrs))
                cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,))
                row = cur.fetchone()
                if row is None:
                    changed.append(f"database {name} created")
                    if not module.check_mode:
                        cur.execute(sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8'").format(
                            sql.Identifier(name), sql.Identifier(owner)))
                elif row[0] != owner:
                    changed.append(f"database {name} owner")
                    if not module.check_mode:
                        cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                            sql.Identifier(name), sql.Identifier(owner)))
    except psycopg2.Error as e:
        # psycopg2 messages carry SQL state and text, never our parameters' values.
        module.fail_json(msg=f"PostgreSQL: {type(e).__name__}: {str(e).strip().splitlines()[0]}")
    finally:
        conn.close()
    module.exit_json(changed=bool(changed), actions=changed)


if __name__ == "__main__":
    main()

"""HTTP side of the lab Hetzner cloud: routing, bearer-token auth, JSON in and out, Hetzner's error bodies."""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from liferaft.lab.clouds._catalog import IMAGES, LOCATIONS, SERVER_TYPES, pricing
from liferaft.lab.clouds._hetzner_api import ApiError, HetznerState, firewall_rule, matches, page
from liferaft.lab.clouds._http import (
    bearer_accepted,
    lab_token_accepted,
    log_line,
    read_json_object,
    route_for,
    send_json,
)

Query = dict[str, list[str]]
Route = Callable[[HetznerState, re.Match[str], Query, dict[str, Any]], tuple[int, dict[str, Any] | None]]


def _find(items: list[dict[str, Any]], query: Query, key: str) -> dict[str, Any]:
    name = query.get("name", [None])[0]
    chosen = [i for i in items if (name is None or i["name"] == name)
              and matches(i.get("labels") or {}, query.get("label_selector", [None])[0])]
    return page(chosen, key, query)


def _servers(st: HetznerState, m: re.Match[str], q: Query, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    items = [{k: v for k, v in s.items() if k != "lab"} for s in st.servers.values()]
    statuses = q.get("status")
    return 200, _find([s for s in items if not statuses or s["status"] in statuses], q, "servers")


def _one(kind: str, store: str) -> Route:
    def route(st: HetznerState, m: re.Match[str], q: Query, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        item = getattr(st, store).get(int(m.group(1)))
        if item is None:
            raise ApiError(404, "not_found", f"{kind} with ID '{m.group(1)}' not found")
        return 200, {kind: {k: v for k, v in item.items() if k != "lab"}}
    return route


def _delete_firewall(st: HetznerState, m: re.Match[str], q: Query, body: dict[str, Any]) -> tuple[int, None]:
    fw = st.firewalls.get(int(m.group(1)))
    if fw is None:
        raise ApiError(404, "not_found", f"firewall with ID '{m.group(1)}' not found")
    if fw["applied_to"]:
        raise ApiError(422, "resource_in_use", "firewall is still in use")
    del st.firewalls[fw["id"]]
    return 204, None


def _set_rules(st: HetznerState, m: re.Match[str], q: Query, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    fw = st.firewalls.get(int(m.group(1)))
    if fw is None:
        raise ApiError(404, "not_found", f"firewall with ID '{m.group(1)}' not found")
    fw["rules"] = [firewall_rule(r) for r in body.get("rules") or []]
    servers = [r["server"]["id"] for r in fw["applied_to"] if r.get("server")]
    st.refresh_firewalls(servers)
    action = st.action("set_firewall_rules", [(fw["id"], "firewall")] + [(s, "server") for s in servers],
                       status="success")
    return 201, {"actions": [action]}


def _delete_ssh_key(st: HetznerState, m: re.Match[str], q: Query, body: dict[str, Any]) -> tuple[int, None]:
    if st.ssh_keys.pop(int(m.group(1)), None) is None:
        raise ApiError(404, "not_found", f"ssh_key with ID '{m.group(1)}' not found")
    return 204, None


ROUTES: list[tuple[str, str, Route]] = [
    ("GET", r"/v1/servers", _servers),
    ("POST", r"/v1/servers", lambda st, m, q, b: (201, st.create_server(b))),
    ("GET", r"/v1/servers/(\d+)", _one("server", "servers")),
    ("DELETE", r"/v1/servers/(\d+)", lambda st, m, q, b: (200, {"action": st.delete_server(int(m.group(1)))})),
    ("GET", r"/v1/ssh_keys", lambda st, m, q, b: (200, _find(
        [k for k in st.ssh_keys.values() if q.get("fingerprint", [k["fingerprint"]])[0] == k["fingerprint"]],
        q, "ssh_keys"))),
    ("POST", r"/v1/ssh_keys", lambda st, m, q, b: (201, {"ssh_key": st.create_ssh_key(b)})),
    ("GET", r"/v1/ssh_keys/(\d+)", _one("ssh_key", "ssh_keys")),
    ("DELETE", r"/v1/ssh_keys/(\d+)", _delete_ssh_key),
    ("GET", r"/v1/firewalls", lambda st, m, q, b: (200, _find(list(st.firewalls.values()), q, "firewalls"))),
    ("POST", r"/v1/firewalls", lambda st, m, q, b: (201, {"firewall": st.create_firewall(b), "actions": []})),
    ("GET", r"/v1/firewalls/(\d+)", _one("firewall", "firewalls")),
    ("DELETE", r"/v1/firewalls/(\d+)", _delete_firewall),
    ("POST", r"/v1/firewalls/(\d+)/actions/set_rules", _set_rules),
    ("GET", r"/v1/actions/(\d+)", _one("action", "actions")),
    ("GET", r"/v1/locations", lambda st, m, q, b: (200, _find(LOCATIONS, q, "locations"))),
    ("GET", r"/v1/server_types", lambda st, m, q, b: (200, _find(SERVER_TYPES, q, "server_types"))),
    ("GET", r"/v1/images", lambda st, m, q, b: (200, _find(IMAGES, q, "images"))),
    ("GET", r"/v1/pricing", lambda st, m, q, b: (200, pricing())),
]


def make_handler(state: HetznerState, control_token: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "lab-hcloud/1"

        def log_message(self, format: str, *args: Any) -> None:
            log_line(self, args)

        def _send(self, status: int, payload: dict[str, Any] | None) -> None:
            send_json(self, status, payload, content_type="application/json", headers=[
                ("RateLimit-Limit", "3600"), ("RateLimit-Remaining", "3599"),
                ("RateLimit-Reset", str(int(time.time()) + 1))])

        def _body(self) -> dict[str, Any]:
            return read_json_object(self, lambda message: ApiError(400, "json_error", message),
                                    "invalid JSON in request body")

        def _handle(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            try:
                body = self._body()
                if url.path == "/":  # the lab's health check (`liferaft lab status`)
                    self._send(200, {"service": "lab hetzner cloud"})
                    return
                if url.path.startswith("/lab/"):
                    self._lab(url.path, body)
                    return
                if not bearer_accepted(self, state.tokens):
                    raise ApiError(401, "unauthorized", "unable to authenticate")
                found = route_for(ROUTES, self.command, url.path)
                if found is None:
                    raise ApiError(404, "not_found", f"no route {self.command} {url.path}")
                route, m = found
                with state.lock:
                    status, payload = route(state, m, query, body)
                self._send(status, payload)
            except ApiError as e:
                self._send(e.status, {"error": {"code": e.code, "message": e.message, "details": e.details}})

        def _lab(self, path: str, body: dict[str, Any]) -> None:
            if not lab_token_accepted(self, control_token):
                raise ApiError(401, "unauthorized", "lab control needs X-Lab-Token")
            with state.lock:
                if path == "/lab/settings" and self.command == "POST":
                    if "server_limit" in body:
                        state.server_limit = int(body["server_limit"])
                    if "apply_user_data_host_keys" in body:
                        state.apply_user_data_host_keys = bool(body["apply_user_data_host_keys"])
                    if "hold_boot" in body:
                        state.set_hold_boot(bool(body["hold_boot"]))
                elif path != "/lab/state":
                    raise ApiError(404, "not_found", f"no lab route {path}")
                self._send(200, {"servers": list(state.servers.values()), "server_limit": state.server_limit,
                                 "apply_user_data_host_keys": state.apply_user_data_host_keys,
                                 "hold_boot": state.hold_boot,
                                 "ssh_keys": len(state.ssh_keys), "firewalls": list(state.firewalls.values())})

        do_GET = do_POST = do_DELETE = do_PUT = _handle

    return Handler

"""HTTP side of the lab DigitalOcean cloud: routing, bearer-token auth, pagination, DigitalOcean's error bodies."""

from __future__ import annotations

import re
import time
import urllib.parse
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from liferaft.lab.clouds._digitalocean_api import (
    IMAGES,
    REGIONS,
    SIZES,
    ApiError,
    DigitalOceanState,
    not_found,
    public,
    unprocessable,
)
from liferaft.lab.clouds._http import (
    bearer_accepted,
    lab_token_accepted,
    log_line,
    read_json_object,
    route_for,
    send_json,
)

Query = dict[str, list[str]]
Route = Callable[[DigitalOceanState, re.Match[str], Query, dict[str, Any], str], tuple[int, dict[str, Any] | None]]
RATE_LIMIT = 5000


def page(items: list[dict[str, Any]], key: str, query: Query, base: str) -> dict[str, Any]:
    """A list answer with DigitalOcean's pagination: `links.pages` (first/prev/next/last, when there is more than
    one page) and `meta.total`; per_page at most 200."""
    per_page = min(200, max(1, int(query.get("per_page", ["20"])[0])))
    number = max(1, int(query.get("page", ["1"])[0]))
    last = max(1, -(-len(items) // per_page))
    pages: dict[str, str] = {}

    def url(n: int) -> str:
        q = {k: v[0] for k, v in query.items() if k not in ("page", "per_page")}
        return f"{base}?{urllib.parse.urlencode({**q, 'page': n, 'per_page': per_page})}"

    if number > 1:
        pages.update(first=url(1), prev=url(number - 1))
    if number < last:
        pages.update(next=url(number + 1), last=url(last))
    return {key: items[(number - 1) * per_page:number * per_page], "links": {"pages": pages} if pages else {},
            "meta": {"total": len(items)}}


def _droplets(st: DigitalOceanState, m: re.Match[str], q: Query, b: dict[str, Any], base: str
              ) -> tuple[int, dict[str, Any]]:
    tag, name = q.get("tag_name", [None])[0], q.get("name", [None])[0]
    items = [public(d) for d in st.droplets.values()
             if (tag is None or tag in d["tags"]) and (name is None or d["name"] == name)]
    return 200, page(items, "droplets", q, base + "/v2/droplets")


def _listing(key: str, items: Callable[[DigitalOceanState], list[dict[str, Any]]]) -> Route:
    def route(st: DigitalOceanState, m: re.Match[str], q: Query, b: dict[str, Any], base: str
              ) -> tuple[int, dict[str, Any]]:
        return 200, page(items(st), key, q, f"{base}/v2/{key.replace('ssh_keys', 'account/keys')}")
    return route


def _image(st: DigitalOceanState, m: re.Match[str], q: Query, b: dict[str, Any], base: str
           ) -> tuple[int, dict[str, Any]]:
    image = next((i for i in IMAGES if m.group(1) in (i["slug"], str(i["id"]))), None)
    if image is None:
        raise not_found()
    return 200, {"image": image}


def _ssh_key(st: DigitalOceanState, m: re.Match[str], q: Query, b: dict[str, Any], base: str
             ) -> tuple[int, dict[str, Any]]:
    try:
        return 200, {"ssh_key": st.ssh_key(m.group(1))}
    except ApiError:
        raise not_found() from None


def _delete_ssh_key(st: DigitalOceanState, m: re.Match[str], q: Query, b: dict[str, Any], base: str
                    ) -> tuple[int, None]:
    key = _ssh_key(st, m, q, b, base)[1]["ssh_key"]
    del st.ssh_keys[key["id"]]
    return 204, None


def _firewall(st: DigitalOceanState, m: re.Match[str], q: Query, b: dict[str, Any], base: str
              ) -> tuple[int, dict[str, Any]]:
    fw = st.firewalls.get(m.group(1))
    if fw is None:
        raise not_found()
    return 200, {"firewall": fw}


def _delete_firewall(st: DigitalOceanState, m: re.Match[str], q: Query, b: dict[str, Any], base: str
                     ) -> tuple[int, None]:
    st.delete_firewall(m.group(1))
    return 204, None


def _create_tag(st: DigitalOceanState, m: re.Match[str], q: Query, b: dict[str, Any], base: str
                ) -> tuple[int, dict[str, Any]]:
    name = str(b.get("name") or "")
    if not name:
        raise unprocessable("name is required")
    return 201, {"tag": st.tag(name)}


def _delete_tag(st: DigitalOceanState, m: re.Match[str], q: Query, b: dict[str, Any], base: str
                ) -> tuple[int, None]:
    name = urllib.parse.unquote(m.group(1))
    if st.tags.pop(name, None) is None:
        raise not_found()
    touched = {d for d, drop in st.droplets.items() if name in drop["tags"]}
    for d in touched:  # a deleted tag is taken off every resource
        st.droplets[d]["tags"] = [t for t in st.droplets[d]["tags"] if t != name]
    for fw in st.firewalls.values():
        fw["tags"] = [t for t in fw["tags"] if t != name]
    st.refresh(touched)
    return 204, None


def _delete_droplet(st: DigitalOceanState, m: re.Match[str], q: Query, b: dict[str, Any], base: str
                    ) -> tuple[int, None]:
    st.delete_droplet(int(m.group(1)))
    return 204, None


def _action(st: DigitalOceanState, m: re.Match[str], q: Query, b: dict[str, Any], base: str
            ) -> tuple[int, dict[str, Any]]:
    action = st.actions.get(int(m.group(1)))
    if action is None:
        raise not_found()
    return 200, {"action": action}


ROUTES: list[tuple[str, str, Route]] = [
    ("GET", r"/v2/account", lambda st, m, q, b, base: (200, {"account": st.account()})),
    ("GET", r"/v2/account/keys", _listing("ssh_keys", lambda st: list(st.ssh_keys.values()))),
    ("POST", r"/v2/account/keys", lambda st, m, q, b, base: (201, {"ssh_key": st.create_ssh_key(b)})),
    ("GET", r"/v2/account/keys/([0-9a-f:]+)", _ssh_key),
    ("DELETE", r"/v2/account/keys/([0-9a-f:]+)", _delete_ssh_key),
    ("GET", r"/v2/droplets", _droplets),
    ("POST", r"/v2/droplets", lambda st, m, q, b, base: (202, st.create_droplet(b, base))),
    ("GET", r"/v2/droplets/(\d+)", lambda st, m, q, b, base: (200, {"droplet": public(st.get_droplet(
        int(m.group(1))))})),
    ("DELETE", r"/v2/droplets/(\d+)", _delete_droplet),
    ("GET", r"/v2/actions/(\d+)", _action),
    ("GET", r"/v2/sizes", _listing("sizes", lambda st: SIZES)),
    ("GET", r"/v2/regions", _listing("regions", lambda st: REGIONS)),
    ("GET", r"/v2/images", _listing("images", lambda st: IMAGES)),
    ("GET", r"/v2/images/([A-Za-z0-9.-]+)", _image),
    ("GET", r"/v2/firewalls", _listing("firewalls", lambda st: list(st.firewalls.values()))),
    ("POST", r"/v2/firewalls", lambda st, m, q, b, base: (202, {"firewall": st.put_firewall(b)})),
    ("GET", r"/v2/firewalls/([0-9a-f-]{36})", _firewall),
    ("PUT", r"/v2/firewalls/([0-9a-f-]{36})", lambda st, m, q, b, base: (200, {"firewall": st.put_firewall(
        b, m.group(1))})),
    ("DELETE", r"/v2/firewalls/([0-9a-f-]{36})", _delete_firewall),
    ("GET", r"/v2/tags", _listing("tags", lambda st: list(st.tags.values()))),
    ("POST", r"/v2/tags", _create_tag),
    ("DELETE", r"/v2/tags/([A-Za-z0-9_:%-]+)", _delete_tag),
]


def make_handler(state: DigitalOceanState, control_token: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "lab-digitalocean/1"

        def log_message(self, format: str, *args: Any) -> None:
            log_line(self, args)

        def _send(self, status: int, payload: dict[str, Any] | None) -> None:
            send_json(self, status, payload,
                      content_type="application/json; charset=utf-8" if payload is not None else None,
                      headers=[("ratelimit-limit", str(RATE_LIMIT)), ("ratelimit-remaining", str(RATE_LIMIT - 1)),
                               ("ratelimit-reset", str(int(time.time()) + 60))])

        def _body(self) -> dict[str, Any]:
            return read_json_object(self, lambda message: ApiError(400, "bad_request", message),
                                    "unexpected end of JSON input")

        def _handle(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            base = f"http://{self.headers.get('Host') or 'api.digitalocean.com'}"
            try:
                body = self._body()
                if url.path == "/":  # the lab's health check (`liferaft lab status`)
                    self._send(200, {"service": "lab digitalocean cloud"})
                    return
                if url.path.startswith("/lab/"):
                    self._lab(url.path, body)
                    return
                if not bearer_accepted(self, state.tokens):
                    raise ApiError(401, "unauthorized", "Unable to authenticate you")
                found = route_for(ROUTES, self.command, url.path)
                if found is None:
                    raise not_found()
                route, m = found
                with state.lock:
                    status, payload = route(state, m, query, body, base)
                self._send(status, payload)
            except ApiError as e:
                self._send(e.status, {"id": e.id, "message": e.message, "request_id": str(uuid.uuid4())})

        def _lab(self, path: str, body: dict[str, Any]) -> None:
            if not lab_token_accepted(self, control_token):
                raise ApiError(401, "unauthorized", "lab control needs X-Lab-Token")
            with state.lock:
                if path == "/lab/settings" and self.command == "POST":
                    if "droplet_limit" in body:
                        state.droplet_limit = int(body["droplet_limit"])
                    if "lose_create_answers" in body:
                        state.lose_create_answers = int(body["lose_create_answers"])
                    if "account_status" in body:
                        state.account_status = str(body["account_status"])
                        state.status_message = str(body.get("status_message") or "")
                    if "apply_user_data_host_keys" in body:
                        state.apply_user_data_host_keys = bool(body["apply_user_data_host_keys"])
                    if "hold_boot" in body:
                        state.set_hold_boot(bool(body["hold_boot"]))
                elif path != "/lab/state":
                    raise ApiError(404, "not_found", f"no lab route {path}")
                self._send(200, {"droplets": list(state.droplets.values()), "droplet_limit": state.droplet_limit,
                                 "account_status": state.account_status,
                                 "apply_user_data_host_keys": state.apply_user_data_host_keys,
                                 "hold_boot": state.hold_boot, "ssh_keys": len(state.ssh_keys),
                                 "firewalls": list(state.firewalls.values()), "tags": sorted(state.tags)})

        do_GET = do_POST = do_DELETE = do_PUT = _handle

    return Handler

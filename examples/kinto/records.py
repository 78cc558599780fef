"""Write records through Kinto's own HTTP API and read them back, comparing by content. Standard library only.

    python records.py write  --url http://kinto.example.test:8888 --ledger ledger.json --records 200
    python records.py verify --url http://kinto.example.test:8888 --ledger ledger.json

`write` creates (PUT) a bucket and a collection, then records: some PUT with ids of their own, some POSTed (Kinto
picks the id), then UPDATEs (PATCH) and DELETEs of some of them -- so the tables without a primary key
(access_control_entries, user_principals) see UPDATEs and DELETEs too. Every acknowledged answer goes to the ledger
(JSON): per record the content Kinto returned last (or a tombstone for a deleted one). `verify` reads every record of
the ledger's collections back (paginated `GET .../records`) and compares each by the sha256 of its canonical JSON
(keys sorted, no spaces) and the counts per collection; exit 1 on any difference.

Basic Auth: Kinto derives the user id from the credentials with `kinto.userid_hmac_secret`, so reading back with the
same credentials at another site also proves that site has the same secret (a different one: 401/403 on the bucket).
`--resolve HOST=ADDRESS` sends requests for HOST to ADDRESS (the Host header keeps the name).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_USER = "liferaft"
DEFAULT_PASSWORD = "kinto-example-password"  # a test account's Basic Auth password


def canonical_sha256(record: dict[str, Any]) -> str:
    """sha256 of the record's canonical JSON: keys sorted, no spaces, UTF-8."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class KintoError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300]}")
        self.status = status


@dataclass
class Kinto:
    """A small Kinto client: `url` is the server's root (http://host:port); requests go to `address` when given
    (the resolved DNS name), with the URL's host in the Host header."""

    url: str
    user: str = DEFAULT_USER
    password: str = DEFAULT_PASSWORD
    address: str | None = None
    timeout: float = 10.0
    requests: int = 0

    def _target(self, path: str) -> tuple[str, dict[str, str]]:
        parts = urllib.parse.urlsplit(self.url)
        headers = {"Authorization": "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode(),
                   "Accept": "application/json"}
        netloc = parts.netloc
        if self.address:
            headers["Host"] = netloc
            netloc = f"{self.address}:{parts.port}" if parts.port else self.address
        return f"{parts.scheme}://{netloc}/v1{path}", headers

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
        url, headers = self._target(path)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        self.requests += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                payload = json.loads(resp.read() or b"{}")
                return payload, resp.headers
        except urllib.error.HTTPError as e:
            raise KintoError(method, path, e.code, e.read().decode(errors="replace")) from None

    def records(self, bucket: str, collection: str, page: int = 200) -> list[dict[str, Any]]:
        """Every record of a collection, following Kinto's pagination (the Next-Page header)."""
        out: list[dict[str, Any]] = []
        path: str | None = f"/buckets/{bucket}/collections/{collection}/records?_limit={page}&_sort=id"
        while path:
            payload, headers = self.call("GET", path)
            out.extend(payload["data"])
            nxt = headers.get("Next-Page")
            path = urllib.parse.urlsplit(nxt)._replace(scheme="", netloc="").geturl().removeprefix("/v1") if nxt \
                else None
        return out


@dataclass
class Ledger:
    """What Kinto acknowledged: per collection ("bucket/collection") record id -> the record as last returned, or
    None once its DELETE was acknowledged."""

    collections: dict[str, dict[str, dict[str, Any] | None]] = field(default_factory=dict)

    def put(self, bucket: str, collection: str, record: dict[str, Any]) -> None:
        self.collections.setdefault(f"{bucket}/{collection}", {})[record["id"]] = record

    def delete(self, bucket: str, collection: str, rid: str) -> None:
        self.collections.setdefault(f"{bucket}/{collection}", {})[rid] = None

    def live(self, key: str) -> dict[str, dict[str, Any]]:
        return {rid: r for rid, r in self.collections.get(key, {}).items() if r is not None}

    def counts(self) -> dict[str, dict[str, int]]:
        return {k: {"live": len(self.live(k)), "deleted": sum(1 for r in v.values() if r is None)}
                for k, v in self.collections.items()}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"collections": self.collections}, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> Ledger:
        return cls(collections=json.loads(Path(path).read_text())["collections"])


def ensure_collection(k: Kinto, bucket: str, collection: str) -> None:
    """PUT the bucket and the collection (If-None-Match would make a second PUT fail; a plain PUT keeps them)."""
    for path in (f"/buckets/{bucket}", f"/buckets/{bucket}/collections/{collection}"):
        try:
            k.call("GET", path)
        except KintoError as e:
            if e.status not in (403, 404):
                raise
            k.call("PUT", path, {"data": {}})


def write_records(k: Kinto, ledger: Ledger, bucket: str, collection: str, *, records: int, tag: str,
                  updates: int = 0, deletes: int = 0) -> None:
    """`records` new records (half PUT with our ids, half POSTed), then `updates` PATCHes and `deletes` DELETEs of
    records of this collection the ledger holds alive. Every acknowledged answer goes to the ledger."""
    ensure_collection(k, bucket, collection)
    for i in range(records):
        data = {"title": f"{tag} #{i}", "n": i, "tags": [tag, f"n{i % 7}"], "body": f"{tag} " + "x" * (i % 97),
                "nested": {"even": i % 2 == 0, "ratio": round(i / 3, 4)}}
        if i % 2 == 0:
            payload, _ = k.call("PUT", f"/buckets/{bucket}/collections/{collection}/records/{tag}-{i:05d}",
                                {"data": data})
        else:
            payload, _ = k.call("POST", f"/buckets/{bucket}/collections/{collection}/records", {"data": data})
        ledger.put(bucket, collection, payload["data"])
    alive = sorted(ledger.live(f"{bucket}/{collection}"))
    for rid in alive[:updates]:
        payload, _ = k.call("PATCH", f"/buckets/{bucket}/collections/{collection}/records/{rid}",
                            {"data": {"updated_by": tag, "title": f"updated at {tag}"}})
        ledger.put(bucket, collection, payload["data"])
    for rid in alive[len(alive) - deletes:] if deletes else []:
        k.call("DELETE", f"/buckets/{bucket}/collections/{collection}/records/{rid}")
        ledger.delete(bucket, collection, rid)


@dataclass
class Verification:
    collections: dict[str, dict[str, int]]  # key -> {expected, found, missing, different, unexpected}
    missing: list[str]
    different: list[str]
    unexpected: list[str]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.different or self.unexpected)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "collections": self.collections, "missing": self.missing[:20],
                "different": self.different[:20], "unexpected": self.unexpected[:20]}


def verify(k: Kinto, ledger: Ledger) -> Verification:
    """Read every collection of the ledger back through the API; compare per record by canonical sha256, and counts
    (a deleted record found again is `unexpected`)."""
    per: dict[str, dict[str, int]] = {}
    missing: list[str] = []
    different: list[str] = []
    unexpected: list[str] = []
    for key in sorted(ledger.collections):
        bucket, collection = key.split("/", 1)
        want = {rid: canonical_sha256(r) for rid, r in ledger.live(key).items()}
        got = {r["id"]: canonical_sha256(r) for r in k.records(bucket, collection)}
        m = [f"{key}/{rid}" for rid in want if rid not in got]
        d = [f"{key}/{rid}" for rid in want if rid in got and got[rid] != want[rid]]
        u = [f"{key}/{rid}" for rid in got if rid not in want]
        missing += m
        different += d
        unexpected += u
        per[key] = {"expected": len(want), "found": len(got), "missing": len(m), "different": len(d),
                    "unexpected": len(u)}
    return Verification(per, missing, different, unexpected)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("write", "verify"))
    p.add_argument("--url", required=True)
    p.add_argument("--resolve", help="HOST=ADDRESS: send requests for the URL's host to ADDRESS")
    p.add_argument("--ledger", required=True)
    p.add_argument("--bucket", default="liferaft")
    p.add_argument("--collection", default="notes")
    p.add_argument("--records", type=int, default=200)
    p.add_argument("--updates", type=int, default=20)
    p.add_argument("--deletes", type=int, default=10)
    p.add_argument("--tag", default="w")
    a = p.parse_args(argv)
    k = Kinto(a.url, address=a.resolve.split("=", 1)[1] if a.resolve else None)
    if a.command == "write":
        ledger = Ledger.load(a.ledger) if Path(a.ledger).exists() else Ledger()
        write_records(k, ledger, a.bucket, a.collection, records=a.records, tag=a.tag, updates=a.updates,
                      deletes=a.deletes)
        ledger.save(a.ledger)
        print(json.dumps(ledger.counts()))
        return 0
    result = verify(k, Ledger.load(a.ledger))
    print(json.dumps(result.to_dict(), indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())

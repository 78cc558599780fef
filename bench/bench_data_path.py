"""The controller's network use for a bucket, through the controller vs at the target host (issue 26, item 1).

    nice -n 19 python -m bench.bench_data_path [--mb 1024] [--object-mb 16] [--json]

A lab of its own: moto (the source, "aws") and s3rver (the target) behind fault proxies on the bridge address of
one lab host (a network namespace with sshd), as in the lab. The proxies count request and response body bytes per
client address: the controller reaches them from the bridge address, the host from its own. The same bucket is
copied twice, each time into a fresh target bucket, then read back by sha256 (what a failover's seed does):
  controller   objects.sync + verify_sync here (data_path: controller)
  target       the same with liferaft's mover on the host (data_path: target): zip sent over SSH, key ranges, the
               manifest recorded here from the mover's lines
Reported per path: the controller's bytes through the proxies, the host's, the zip sent over SSH, wall times.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=1024, help="bucket size in MiB (default 1024)")
    ap.add_argument("--object-mb", type=int, default=16, help="object size in MiB (default 16)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import boto3

    from liferaft.configure import TargetHost
    from liferaft.configure.remote import ssh_process
    from liferaft.lab.hosts import LabHosts
    from liferaft.lab.proxy import FaultProxy
    from liferaft.lab.servers import MotoServer, S3rverServer
    from liferaft.movers import remote as rm
    from liferaft.movers.objects import Endpoint, Remote, sync, verify_sync
    from liferaft.providers.registry import open_provider

    work = Path(tempfile.mkdtemp(prefix="liferaft-bench-path-"))
    stack = contextlib.ExitStack()
    rows: list[dict[str, Any]] = []
    try:
        hosts = LabHosts(work / "hosts", names=("m",)).up()
        stack.callback(hosts.down)
        bridge = hosts.bridge_address
        moto = MotoServer(work / "servers", account_id="123456789012").start()
        stack.callback(moto.stop)
        s3rver = S3rverServer(work / "servers").start()
        stack.callback(s3rver.stop)
        proxies = {}
        for name, server, flavour in (("aws", moto, "aws"), ("objstore", s3rver, "s3")):
            p = FaultProxy(f"{name}-proxy", work / "proxies", bridge, server.url, flavour).start()
            stack.callback(p.stop)
            proxies[name] = p
        os.environ["BENCH_AWS_KEY"], os.environ["BENCH_S3RVER"] = "testing", "S3RVER"
        configs = {
            "aws": {"type": "aws", "region": "us-east-1", "endpoint": proxies["aws"].url,
                    "credentials": {"access_key_id": "env:BENCH_AWS_KEY", "secret_access_key": "env:BENCH_AWS_KEY"}},
            "objstore": {"type": "libcloud", "storage": {"driver": "s3", "host": bridge,
                                                         "port": int(proxies["objstore"].url.rsplit(":", 1)[1]),
                                                         "secure": False},
                         "credentials": {"key": "env:BENCH_S3RVER", "secret": "env:BENCH_S3RVER"}},
        }

        def resolve(ref: str) -> str:
            return os.environ[ref.partition(":")[2]]

        def objects(name: str) -> Any:
            return open_provider(name, configs[name], resolve, state_dir=work / "state").require("objects")

        s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        s3.create_bucket(Bucket="media")
        n = max(1, args.mb // args.object_mb)
        for i in range(n):
            s3.put_object(Bucket="media", Key=f"o/{i:05d}", Body=os.urandom(args.object_mb * MIB))
        size = n * args.object_mb * MIB
        h = hosts["m"]
        host = TargetHost(h.name, h.address, h.port, h.user, (h.known_hosts_line,), str(h.client_key))
        for path in ("controller", "target"):
            bucket = f"copy-{path}"
            src = Endpoint("aws", objects("aws"), "media", factory=lambda: objects("aws"))
            tgt = Endpoint("objstore", objects("objstore"), bucket, factory=lambda: objects("objstore"))
            tgt.objects.create_bucket(bucket)
            remote = None
            if path == "target":
                remote = Remote((rm.Host(h.name, lambda command: ssh_process(host, command)),), work / "bundles",
                                {"provider": "aws", "config": configs["aws"], "bucket": "media", "prefix": ""},
                                {"provider": "objstore", "config": configs["objstore"], "bucket": bucket,
                                 "prefix": ""}, resolve)
            for p in proxies.values():
                p.reset_stats()
            t0 = time.monotonic()
            res = sync(src, tgt, work / f"state-{path}", remote=remote)
            t1 = time.monotonic()
            rep = verify_sync(src, tgt, remote=remote)
            t2 = time.monotonic()
            assert res.copied == n and rep.ok, (res, rep)
            by: dict[str, int] = {}
            for p in proxies.values():
                for client, v in p.stats()["by_client"].items():
                    by[client] = by.get(client, 0) + v["received"] + v["sent"]
            mine = by.get(bridge, 0)
            bundle = rm.build_bundle(work / "bundles").size if remote else 0
            rows.append({"path": path, "bucket_bytes": size, "objects": n, "controller_store_bytes": mine,
                         "host_store_bytes": by.get(h.address, 0), "zip_bytes_over_ssh": bundle * 2,
                         "controller_share": round((mine + bundle * 2) / size, 4), "sync_s": round(t1 - t0, 1),
                         "verify_s": round(t2 - t1, 1)})
    finally:
        stack.close()
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(f"bucket: {rows[0]['objects']} x {args.object_mb} MiB = {rows[0]['bucket_bytes'] / 1e6:.0f} MB; "
              "copy + read-back by sha256")
        print("| data path | controller <-> stores | host <-> stores | zip over SSH | controller total / bucket "
              "| sync | verify |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['path']} | {r['controller_store_bytes'] / 1e6:.1f} MB | {r['host_store_bytes'] / 1e6:.1f} MB"
                  f" | {r['zip_bytes_over_ssh'] / 1e6:.1f} MB | {r['controller_share']:.3f} | {r['sync_s']} s "
                  f"| {r['verify_s']} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

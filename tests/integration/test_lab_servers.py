"""The lab's real provider servers and the fault proxy in front of them."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from liferaft.errors import LiferaftError, ToolMissing
from liferaft.lab._proc import OPENER
from liferaft.lab.proxy import FaultProxy
from liferaft.lab.servers import MotoServer, PowerDNSServer, find_s3rver
from tests.fixtures_servers import Endpoint

pytestmark = pytest.mark.lab

MiB = 1 << 20
ONE_TRY: dict[str, Any] = {"retries": {"max_attempts": 1, "mode": "standard"}, "connect_timeout": 2, "read_timeout": 10}


def _error(call: object) -> tuple[str, int]:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as info:
        call()  # type: ignore[operator]
    err = info.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def _http(url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
          data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with OPENER.open(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _resolve(server: tuple[str, int], name: str) -> list[str]:
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server[0]]
    resolver.port = server[1]
    resolver.lifetime = 3
    return sorted(r.to_text() for r in resolver.resolve(name, "A"))


# ------------------------------------------------------------------------------------------------ servers
def test_moto_serves_s3_and_ec2(clean_aws_endpoint: Endpoint) -> None:
    """moto answers S3 and EC2 as its own process; reset wipes its state."""
    s3 = clean_aws_endpoint.client("s3", direct=True)
    s3.create_bucket(Bucket="photos")
    s3.put_object(Bucket="photos", Key="a.txt", Body=b"hello")
    assert s3.get_object(Bucket="photos", Key="a.txt")["Body"].read() == b"hello"
    ec2 = clean_aws_endpoint.client("ec2", direct=True)
    # One of moto's built-in Amazon images (describe_images over all 1,177 takes seconds on a busy machine).
    run = ec2.run_instances(ImageId="ami-03cf127a", MinCount=1, MaxCount=1, InstanceType="t3.micro")
    instance = run["Instances"][0]["InstanceId"]
    found = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    assert found["State"]["Name"] in ("pending", "running") and found["ImageId"] == "ami-03cf127a"
    clean_aws_endpoint.server.reset()
    assert s3.list_buckets()["Buckets"] == []
    assert ec2.describe_instances()["Reservations"] == []


def test_s3rver_serves_path_style_s3(clean_s3rver_endpoint: Endpoint) -> None:
    """s3rver stores and returns objects over path-style S3; reset empties it."""
    s3 = clean_s3rver_endpoint.client("s3", direct=True)
    s3.create_bucket(Bucket="images")
    s3.put_object(Bucket="images", Key="dir/b.bin", Body=b"\x00" * 1000)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="images")["Contents"]] == ["dir/b.bin"]
    assert s3.get_object(Bucket="images", Key="dir/b.bin")["Body"].read() == b"\x00" * 1000
    clean_s3rver_endpoint.server.reset()
    assert s3.list_buckets()["Buckets"] == []


def test_pdns_answers_real_dns_queries(clean_pdns_endpoint: Endpoint) -> None:
    """A zone made through the PowerDNS API answers real DNS queries, and record changes answer at once."""
    pdns = clean_pdns_endpoint.server
    assert isinstance(pdns, PowerDNSServer)
    pdns.create_zone("shop.test", {("www", "A"): ["10.1.2.3"]})
    assert clean_pdns_endpoint.dns is not None
    assert _resolve(clean_pdns_endpoint.dns, "www.shop.test.") == ["10.1.2.3"]
    pdns.set_records("shop.test", "www", "A", ["10.1.2.4", "10.1.2.5"])
    assert _resolve(clean_pdns_endpoint.dns, "www.shop.test.") == ["10.1.2.4", "10.1.2.5"]
    assert pdns.list_zones() == ["shop.test."]


def test_api_key_stays_off_command_lines_and_status(pdns_server: PowerDNSServer) -> None:
    """The PowerDNS API key is only in the 0600 config file: not in argv, not in to_dict()."""
    assert pdns_server.pid is not None
    cmdline = Path(f"/proc/{pdns_server.pid}/cmdline").read_bytes()
    assert pdns_server.api_key.encode() not in cmdline
    assert pdns_server.api_key not in json.dumps(pdns_server.to_dict())
    assert pdns_server.conf_path.stat().st_mode & 0o777 == 0o600
    assert pdns_server.api_key not in pdns_server.log_path.read_text()


def test_start_failure_shows_log_tail(tmp_path: Path) -> None:
    """A server that cannot start fails with its log's tail, not a bare timeout."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = MotoServer(tmp_path, port=taken.getsockname()[1])
        with pytest.raises(LiferaftError) as info:
            server.start()
    assert "last lines of" in str(info.value) and str(server.log_path) in str(info.value)
    assert "address" in str(info.value).lower()  # moto's own "Address already in use" line
    assert not server.running


def test_missing_s3rver_is_a_tool_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without s3rver the error says how to install it."""
    monkeypatch.setenv("LIFERAFT_S3RVER", str(tmp_path / "nope.js"))
    with pytest.raises(ToolMissing) as info:
        find_s3rver()
    assert "npm install" in str(info.value)


def test_servers_die_with_their_controller(tmp_path: Path) -> None:
    """A server started by a controller that is SIGKILLed dies too (pdeathsig), even in its own session."""
    script = textwrap.dedent(f"""
        import sys, time
        from liferaft.lab.servers import S3rverServer
        s = S3rverServer({str(tmp_path)!r}).start()
        print(s.pid, flush=True)
        time.sleep(60)
    """)
    controller = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert controller.stdout is not None
        pid = int(controller.stdout.readline())
        assert os.getsid(pid) == pid  # its own session: a terminal's Ctrl-C does not reach it
        controller.send_signal(signal.SIGKILL)
        controller.wait(10)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists()
    finally:
        controller.kill()
        controller.wait()


# ------------------------------------------------------------------------------------------------ proxy
def test_forward_streams_large_multipart_intact(aws_endpoint: Endpoint) -> None:
    """Forward mode passes a multipart upload of 16 MiB parts byte for byte, both ways."""
    from boto3.s3.transfer import TransferConfig

    s3 = aws_endpoint.client("s3")
    s3.create_bucket(Bucket="big-parts")
    data = os.urandom(40 * MiB)
    import io

    cfg = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=16 * MiB, max_concurrency=2)
    s3.upload_fileobj(io.BytesIO(data), "big-parts", "blob", Config=cfg)
    out = io.BytesIO()
    s3.download_fileobj("big-parts", "blob", out, Config=cfg)
    assert hashlib.sha256(out.getvalue()).hexdigest() == hashlib.sha256(data).hexdigest()
    head = s3.head_object(Bucket="big-parts", Key="blob")
    assert head["ETag"].strip('"').endswith("-3")  # really went up as 3 parts
    s3.delete_object(Bucket="big-parts", Key="blob")


def test_forward_relays_chunked_request_bodies(aws_endpoint: Endpoint) -> None:
    """A chunked request body reaches the server whole through the proxy."""
    aws_endpoint.client("s3").create_bucket(Bucket="chunked")
    conn = http.client.HTTPConnection(aws_endpoint.address, aws_endpoint.port, timeout=10)
    body = [os.urandom(100_000) for _ in range(5)]
    conn.request("PUT", "/chunked/obj", body=iter(body), encode_chunked=True)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    got = aws_endpoint.client("s3").get_object(Bucket="chunked", Key="obj")["Body"].read()
    assert got == b"".join(body)


def test_deny_answers_like_a_suspended_aws_account(aws_endpoint: Endpoint) -> None:
    """Deny gives each AWS service its own auth error, on the same kept-alive clients, and heal restores."""
    s3, ec2 = aws_endpoint.client("s3", **ONE_TRY), aws_endpoint.client("ec2", **ONE_TRY)
    r53, sts = aws_endpoint.client("route53", **ONE_TRY), aws_endpoint.client("sts", **ONE_TRY)
    s3.list_buckets()
    ec2.describe_instances()  # connections are now open and kept alive
    aws_endpoint.proxy.set_mode("deny")
    assert _error(s3.list_buckets) == ("AccessDenied", 403)
    assert _error(lambda: s3.put_object(Bucket="x-bucket", Key="k", Body=b"z" * (17 * MiB))) == ("AccessDenied", 403)
    assert _error(ec2.describe_instances) == ("AuthFailure", 401)
    assert _error(r53.list_hosted_zones) == ("AccessDenied", 403)
    assert _error(sts.get_caller_identity) == ("InvalidClientTokenId", 403)
    assert _error(aws_endpoint.client("iam", **ONE_TRY).list_users) == ("InvalidClientTokenId", 403)
    aws_endpoint.proxy.heal()
    assert sts.get_caller_identity()["Account"] == "123456789012"
    s3.list_buckets()


def test_deny_s3rver_and_pdns_as_the_real_servers_do(s3rver_endpoint: Endpoint, pdns_endpoint: Endpoint) -> None:
    """s3rver's proxy denies with S3's AccessDenied; PowerDNS's with exactly what pdns sends for a wrong key."""
    s3rver_endpoint.proxy.set_mode("deny")
    assert _error(s3rver_endpoint.client("s3", **ONE_TRY).list_buckets) == ("AccessDenied", 403)

    zones = "/api/v1/servers/localhost/zones"
    real = _http(pdns_endpoint.server.url + zones, headers={"X-API-Key": "wrong"})
    assert _http(pdns_endpoint.url + zones, headers={"X-API-Key": str(pdns_endpoint.api_key)})[0] == 200
    pdns_endpoint.proxy.set_mode("deny")
    faked = _http(pdns_endpoint.url + zones, headers={"X-API-Key": str(pdns_endpoint.api_key)})
    assert (faked[0], faked[2]) == (real[0], real[2]) == (401, b"Unauthorized")
    assert faked[1]["WWW-Authenticate"] == real[1]["Www-Authenticate"]


def test_down_refuses_connects_and_drops_open_connections(aws_endpoint: Endpoint) -> None:
    """Down: boto3 fails fast with EndpointConnectionError, open connections are closed, heal restores."""
    from botocore.exceptions import EndpointConnectionError

    s3 = aws_endpoint.client("s3", **ONE_TRY)
    s3.list_buckets()
    idle = socket.create_connection((aws_endpoint.address, aws_endpoint.port))
    idle.settimeout(5)
    aws_endpoint.proxy.set_mode("down")
    try:
        assert idle.recv(1) == b""  # the proxy closed the open connection
    except ConnectionResetError:
        pass
    started = time.monotonic()
    with pytest.raises(EndpointConnectionError):
        s3.list_buckets()
    assert time.monotonic() - started < 5
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((aws_endpoint.address, aws_endpoint.port), timeout=2)
    aws_endpoint.proxy.heal()
    s3.list_buckets()
    idle.close()


def test_down_cuts_a_transfer_in_flight(s3rver_endpoint: Endpoint) -> None:
    """Down in the middle of a request body breaks that transfer at once (a provider cut mid-copy)."""
    s3rver_endpoint.client("s3").create_bucket(Bucket="in-flight")
    conn = socket.create_connection((s3rver_endpoint.address, s3rver_endpoint.port), timeout=5)
    conn.sendall(f"PUT /in-flight/obj HTTP/1.1\r\nHost: x\r\nContent-Length: {64 * MiB}\r\n\r\n".encode())
    conn.sendall(b"\0" * MiB)
    s3rver_endpoint.proxy.set_mode("down")
    with pytest.raises((ConnectionResetError, BrokenPipeError)):  # dropped, not hung (a timeout fails the test)
        for _ in range(63):
            conn.sendall(b"\0" * MiB)
        if not conn.recv(1):
            raise ConnectionResetError("closed")
    conn.close()


def test_throttle_sends_retry_after_then_forwards_after_count(s3rver_endpoint: Endpoint,
                                                              pdns_endpoint: Endpoint) -> None:
    """Throttle answers 503 SlowDown (S3) / 429 (PowerDNS) with Retry-After, and forwards again after `count`."""
    s3rver_endpoint.proxy.set_mode("throttle", count=2, retry_after=7)
    for _ in range(2):
        status, headers, body = _http(s3rver_endpoint.url + "/")
        assert (status, headers["Retry-After"]) == (503, "7") and b"<Code>SlowDown</Code>" in body
    assert _http(s3rver_endpoint.url + "/")[0] == 200
    assert s3rver_endpoint.proxy.mode == "forward"
    pdns_endpoint.proxy.set_mode("throttle")
    status, headers, _ = _http(pdns_endpoint.url + "/api/v1/servers", headers={"X-API-Key": "x"})
    assert (status, headers["Retry-After"]) == (429, "1")


def test_error_mode_answers_500_internal_error(aws_endpoint: Endpoint) -> None:
    """Error mode: S3's 500 InternalError; heal restores."""
    s3 = aws_endpoint.client("s3", **ONE_TRY)
    aws_endpoint.proxy.set_mode("error")
    assert _error(s3.list_buckets) == ("InternalError", 500)
    aws_endpoint.proxy.heal()
    s3.list_buckets()


def test_hang_black_holes_and_delay_slows(pdns_endpoint: Endpoint, aws_endpoint: Endpoint) -> None:
    """Hang: requests get no answer (clients time out); delay: each request waits at least that long."""
    from botocore.exceptions import ReadTimeoutError

    s3 = aws_endpoint.client("s3", retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=1)
    s3.list_buckets()
    aws_endpoint.proxy.set_mode("hang")
    with pytest.raises(ReadTimeoutError):
        s3.list_buckets()
    aws_endpoint.proxy.set_mode("forward", delay=0.5)
    started = time.monotonic()
    s3.list_buckets()
    assert time.monotonic() - started >= 0.5
    aws_endpoint.proxy.heal()
    assert aws_endpoint.proxy.stats()["faulted"] == {"hang": 1}


def test_counts_mutating_requests(aws_endpoint: Endpoint, pdns_endpoint: Endpoint) -> None:
    """A PUT counts as mutating, a GET does not; EC2's POSTed Describe calls are read-only, RunInstances is not."""
    s3, ec2 = aws_endpoint.client("s3"), aws_endpoint.client("ec2")
    s3.list_buckets()
    ec2.describe_instances()
    assert aws_endpoint.proxy.stats()["mutating"] == 0
    s3.create_bucket(Bucket="counted")
    stats = aws_endpoint.proxy.stats()
    assert (stats["mutating"], stats["requests"], stats["by_method"]) == (1, 3, {"GET": 1, "POST": 1, "PUT": 1})
    assert stats["by_action"] == {"DescribeInstances": 1} and stats["recent_mutating"] == ["PUT /counted"]
    ec2.create_key_pair(KeyName="counted")
    assert aws_endpoint.proxy.stats()["mutating"] == 2
    aws_endpoint.proxy.reset_stats()
    assert aws_endpoint.proxy.stats()["requests"] == 0
    key = {"X-API-Key": str(pdns_endpoint.api_key)}
    _http(pdns_endpoint.url + "/api/v1/servers/localhost/zones", headers=key)
    assert pdns_endpoint.proxy.stats()["mutating"] == 0
    _http(pdns_endpoint.url + "/api/v1/servers/localhost/zones/nope.", method="DELETE", headers=key)
    assert pdns_endpoint.proxy.stats()["mutating"] == 1


def test_mode_set_from_another_process_applies(aws_endpoint: Endpoint) -> None:
    """`lab cut` runs in another process: attaching by name and setting deny hits the next request."""
    s3 = aws_endpoint.client("s3", **ONE_TRY)
    s3.list_buckets()
    workdir = aws_endpoint.proxy.workdir
    script = textwrap.dedent(f"""
        import json
        from liferaft.lab.proxy import FaultProxy
        p = FaultProxy.attach({aws_endpoint.proxy.name!r}, {str(workdir)!r})
        p.set_mode("deny")
        print(json.dumps({{"mode": p.mode, "requests": p.stats()["requests"]}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30)
    assert json.loads(out.stdout) == {"mode": "deny", "requests": 1}
    assert _error(s3.list_buckets) == ("AccessDenied", 403)
    assert FaultProxy.attach(aws_endpoint.proxy.name, workdir).to_dict()["mode"] == "deny"


def _sink_server(body: bytes) -> socket.socket:
    """A minimal HTTP/1.1 server that discards request bodies and answers GET with `body`: the fastest upstream
    this machine can offer, so the proxy's own ceiling shows."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            while head := b"".join(iter(lambda: f.readline(), b"\r\n")):
                if not head.strip():
                    return
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while length:
                    length -= len(f.read(min(length, MiB)))
                if head.startswith(b"GET"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv


def test_proxy_overhead(aws_endpoint: Endpoint, tmp_path: Path) -> None:
    """Prints 64 MiB PUT/GET throughput direct vs through the proxy, to moto and to a bare sink (numbers only: the
    machine is shared, timing is not asserted; the bodies are)."""
    data = os.urandom(64 * MiB)
    rates: dict[str, list[float]] = {}

    def timed(label: str, fn: object) -> None:
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        rates.setdefault(label, []).append(64 * MiB / (time.perf_counter() - t) / 1e6)

    direct, proxied = aws_endpoint.client("s3", direct=True), aws_endpoint.client("s3")
    direct.create_bucket(Bucket="overhead")
    for label, client in (("direct", direct), ("proxied", proxied)):
        timed(f"moto {label} PUT", lambda c=client: c.put_object(Bucket="overhead", Key="k", Body=data))
        timed(f"moto {label} GET",
              lambda c=client: len(c.get_object(Bucket="overhead", Key="k")["Body"].read()) == len(data) or 1 / 0)
    direct.delete_object(Bucket="overhead", Key="k")

    sink = _sink_server(data)
    port = sink.getsockname()[1]
    try:
        with FaultProxy("sink-proxy", tmp_path, "127.0.0.1", f"http://127.0.0.1:{port}", "s3") as proxy:
            for label, target in (("direct", port), ("proxied", proxy.port)):
                conn = http.client.HTTPConnection("127.0.0.1", target, timeout=30)
                timed(f"sink {label} PUT",
                      lambda c=conn: c.request("PUT", "/b/k", body=data) or c.getresponse().read())
                timed(f"sink {label} GET",
                      lambda c=conn: c.request("GET", "/b/k") or len(c.getresponse().read()) == len(data) or 1 / 0)
                conn.close()
    finally:
        sink.close()
    print("\n64 MiB, MB/s per run:\n" + "\n".join(f"  {k:20} {', '.join(f'{v:.0f}' for v in vs)}"
                                                  for k, vs in rates.items()))

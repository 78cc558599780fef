"""The aws adapter's EC2 compute and Route53 DNS capabilities (S3 and STS live in aws.py)."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from liferaft.errors import NotFound, ProviderError, Unreachable
from liferaft.providers._net import host_keys_from_console, known_hosts_lines, wait_running, wait_tcp
from liferaft.providers.base import Host, HostSpec, RecordSet, SshAccess

if TYPE_CHECKING:
    from liferaft.providers.aws import AwsClients

EC2_STATE_MAP = {
    "pending": "pending", "running": "running", "stopping": "stopped", "stopped": "stopped",
    "shutting-down": "terminated", "terminated": "terminated",
}
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
DEFAULT_SIZE = "t3.micro"


def fqdn(name: str) -> str:
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


# ---------------------------------------------------------------------------------------------------- EC2
class AwsCompute:
    """EC2 instances, named by their `Name` tag (create is idempotent by that name)."""

    def __init__(self, clients: AwsClients, *, ssh_user: str = "root", private_key_file: str | None = None,
                 key_name: str | None = None, image: str | None = None, instance_type: str | None = None,
                 poll_interval: float = 0.5) -> None:
        self._c = clients
        self.image = image
        self.instance_type = instance_type
        self.ssh_user = ssh_user
        self.private_key_file = private_key_file
        self.key_name = key_name
        self.poll_interval = poll_interval

    @property
    def _ec2(self) -> Any:
        return self._c.client("ec2")

    def _to_host(self, inst: dict[str, Any]) -> Host:
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        state = inst.get("State", {}).get("Name", "unknown")
        return Host(id=inst["InstanceId"], name=tags.get("Name", inst["InstanceId"]),
                    address=inst.get("PublicIpAddress") or inst.get("PrivateIpAddress"),
                    state=EC2_STATE_MAP.get(state, "unknown"),
                    extra={"ec2_state": state, "image": inst.get("ImageId"), "size": inst.get("InstanceType"),
                           "key_name": inst.get("KeyName"), "tags": tags})

    def _describe(self, op: str, **kwargs: Any) -> list[Host]:
        hosts: list[Host] = []
        token: str | None = None
        while True:
            args = dict(kwargs, **({"NextToken": token} if token else {}))
            page = self._c.call(op, lambda a=args: self._ec2.describe_instances(**a))  # type: ignore[misc]
            for res in page.get("Reservations", []):
                hosts.extend(self._to_host(i) for i in res.get("Instances", []))
            token = page.get("NextToken")
            if not token:
                return hosts

    def list_hosts(self) -> list[Host]:
        return self._describe("describe instances")

    def reachable_hosts(self) -> list[Host]:
        return [h for h in self.list_hosts() if h.ssh is not None]

    def get_host(self, host_id: str) -> Host:
        hosts = self._describe(f"describe instance {host_id}", InstanceIds=[host_id])
        if not hosts:
            raise NotFound(self._c.name, f"describe instance {host_id}", "no such instance")
        return hosts[0]

    def ensure_key_pair(self, key_name: str, public_key: str) -> None:
        """Import an SSH public key as an EC2 key pair; an existing pair of that name is kept."""
        try:
            self._c.call(f"import key pair {key_name}", lambda: self._ec2.import_key_pair(
                KeyName=key_name, PublicKeyMaterial=public_key.encode()))
        except ProviderError as exc:
            if exc.code != "InvalidKeyPair.Duplicate":
                raise
        self.key_name = key_name

    def create_host(self, spec: HostSpec) -> Host:
        existing = self._describe(f"find instance {spec.name}", Filters=[
            {"Name": "tag:Name", "Values": [spec.name]}, {"Name": "instance-state-name", "Values": LIVE_STATES}])
        if existing:
            return existing[0]
        image = spec.image or self.image
        if not image:
            raise ProviderError(self._c.name, f"create instance {spec.name}", "no image (AMI id) given",
                                hint="set the image for this site's hosts in the stack file")
        tags = [{"Key": "Name", "Value": spec.name}, {"Key": "liferaft", "Value": "managed"}]
        tags += [{"Key": k, "Value": v} for k, v in spec.tags.items()]
        kwargs: dict[str, Any] = {
            "ImageId": image, "InstanceType": spec.size or self.instance_type or DEFAULT_SIZE, "MinCount": 1, "MaxCount": 1,
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if self.key_name:
            kwargs["KeyName"] = self.key_name
        r = self._c.call(f"run instance {spec.name}", lambda: self._ec2.run_instances(**kwargs))
        return self._to_host(r["Instances"][0])

    def destroy_host(self, host_id: str) -> None:
        try:
            self._c.call(f"terminate instance {host_id}",
                         lambda: self._ec2.terminate_instances(InstanceIds=[host_id]))
        except NotFound:
            return

    def wait_running(self, host_id: str, timeout: float = 120.0) -> Host:
        return wait_running(self.get_host, host_id, timeout, self.poll_interval, provider=self._c.name,
                            what="instance", state_key="ec2_state")

    def host_keys(self, host_id: str) -> tuple[str, ...]:
        """Host keys printed by cloud-init on the console (the only trustworthy source before first login)."""
        r = self._c.call(f"console output {host_id}",
                         lambda: self._ec2.get_console_output(InstanceId=host_id, Latest=True))
        out = r.get("Output") or ""
        if out and "BEGIN SSH HOST KEY" not in out:
            try:
                import base64

                out = base64.b64decode(out).decode(errors="replace")
            except ValueError:
                pass
        return host_keys_from_console(out)

    def wait_reachable(self, host: Host, timeout: float = 120.0) -> Host:
        start = time.monotonic()
        running = self.wait_running(host.id, timeout)
        if not running.address:
            raise Unreachable(self._c.name, f"wait for instance {host.id}", "the instance has no address")
        wait_tcp(self._c.name, running.address, 22, max(0.5, timeout - (time.monotonic() - start)))
        keys = self.host_keys(host.id)
        ssh = SshAccess(address=running.address, port=22, user=self.ssh_user,
                        known_hosts=known_hosts_lines(running.address, 22, keys),
                        private_key_file=self.private_key_file)
        return Host(id=running.id, name=running.name, address=running.address, state=running.state, ssh=ssh,
                    extra=running.extra)


# ---------------------------------------------------------------------------------------------------- Route53
class AwsDNS:
    """Route53 hosted zones. Apex SOA and NS sets are provider-managed and never listed or changed: moto
    answers the SOA value as a stringified dict (LAB.md quirk), and copying NS/SOA between providers is wrong
    anyway."""

    def __init__(self, clients: AwsClients) -> None:
        self._c = clients

    @property
    def _r53(self) -> Any:
        return self._c.client("route53")

    def list_zones(self) -> list[str]:
        zones: list[str] = []
        marker: str | None = None
        while True:
            args = {"Marker": marker} if marker else {}
            page = self._c.call("list hosted zones",
                                lambda a=args: self._r53.list_hosted_zones(**a))  # type: ignore[misc]
            zones.extend(fqdn(z["Name"]) for z in page.get("HostedZones", []))
            if not page.get("IsTruncated"):
                return zones
            marker = page.get("NextMarker")

    def _zone_id(self, zone: str) -> str:
        zone = fqdn(zone)
        r = self._c.call(f"find zone {zone}", lambda: self._r53.list_hosted_zones_by_name(DNSName=zone))
        for z in r.get("HostedZones", []):
            if fqdn(z["Name"]) == zone:
                return str(z["Id"]).split("/")[-1]
        raise NotFound(self._c.name, f"find zone {zone}", "no such hosted zone")

    def create_zone(self, zone: str) -> None:
        """Create the hosted zone unless it exists (lab and drill setup)."""
        try:
            self._zone_id(zone)
            return
        except NotFound:
            pass
        self._c.call(f"create zone {zone}", lambda: self._r53.create_hosted_zone(
            Name=fqdn(zone), CallerReference=f"liferaft-{uuid.uuid4()}"))

    def delete_zone(self, zone: str) -> None:
        try:
            zid = self._zone_id(zone)
        except NotFound:
            return
        for rs in self.get_records(zone):
            self.delete_record(zone, rs.name, rs.type)
        self._c.call(f"delete zone {zone}", lambda: self._r53.delete_hosted_zone(Id=zid))

    def _raw_sets(self, zone_id: str, zone: str) -> list[dict[str, Any]]:
        sets: list[dict[str, Any]] = []
        args: dict[str, Any] = {"HostedZoneId": zone_id}
        while True:
            page = self._c.call(f"list records of {zone}",
                                lambda a=dict(args): self._r53.list_resource_record_sets(**a))  # type: ignore[misc]
            sets.extend(page.get("ResourceRecordSets", []))
            if not page.get("IsTruncated"):
                return sets
            args.update(StartRecordName=page["NextRecordName"], StartRecordType=page["NextRecordType"])

    def get_records(self, zone: str, name: str | None = None, type: str | None = None) -> list[RecordSet]:
        zone = fqdn(zone)
        out = []
        for rs in self._raw_sets(self._zone_id(zone), zone):
            rname = fqdn(rs["Name"].replace("\\052", "*"))  # Route53 escapes "*" as \052
            if rs["Type"] in ("SOA", "NS") and rname == zone:
                continue  # provider-managed apex sets (and moto's stringified SOA value): see class docstring
            if "ResourceRecords" not in rs:
                continue  # alias records have no portable values
            if (name and fqdn(name) != rname) or (type and type.upper() != rs["Type"]):
                continue
            out.append(RecordSet(name=rname, type=rs["Type"], ttl=int(rs.get("TTL", 0)),
                                 values=tuple(r["Value"] for r in rs["ResourceRecords"])))
        return out

    def upsert_record(self, zone: str, record: RecordSet) -> None:
        zid = self._zone_id(zone)
        change = {"Action": "UPSERT", "ResourceRecordSet": {
            "Name": fqdn(record.name), "Type": record.type.upper(), "TTL": record.ttl,
            "ResourceRecords": [{"Value": v} for v in record.values]}}
        self._c.call(f"upsert {record.name} {record.type}", lambda: self._r53.change_resource_record_sets(
            HostedZoneId=zid, ChangeBatch={"Changes": [change]}))

    def delete_record(self, zone: str, name: str, type: str) -> None:
        zid = self._zone_id(zone)
        current = self.get_records(zone, name, type)
        if not current:
            return
        rs = current[0]
        change = {"Action": "DELETE", "ResourceRecordSet": {
            "Name": rs.name, "Type": rs.type, "TTL": rs.ttl, "ResourceRecords": [{"Value": v} for v in rs.values]}}
        self._c.call(f"delete {name} {type}", lambda: self._r53.change_resource_record_sets(
            HostedZoneId=zid, ChangeBatch={"Changes": [change]}))

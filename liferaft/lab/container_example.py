"""The example app's container variant in the lab: the stack file `lab up` writes beside liferaft.yaml
(`liferaft.containers.yaml`, the shape of examples/microblog/liferaft.containers.yaml).

The same stack as the playbook variant -- sites, the database `blog`, the bucket `images`, DNS; not the playbook
variant's worker, nor its Redis keyspace and folder -- with each site's image registry (the primary: the "aws"
registry behind its fault proxy, logging in through the aws provider as ECR; alt-b: registry-b), the alternate kept
as a warm standby (`replicate` mirrors the images and leaves the containers created, stopped, at b), and two
container services:
- `web`: the microblog (liferaft.lab.app_image) by digest from the primary's registry: its database and bucket as
  environment (`LIFERAFT_DB_BLOG_*`, `LIFERAFT_BUCKET_IMAGES_*`), a setting and an app secret, port 8080, /healthz;
- `status`: the lab's busybox image serving /healthz on 8081, which `depends_on: [web]` (started after web, stopped
  before it).
"""

from __future__ import annotations

from typing import Any

FILE_NAME = "liferaft.containers.yaml"
STATUS_PORT = 8081


def container_example_stack(stack_text: str, state: dict[str, Any]) -> str:
    """The lab's stack file (`stack_text`, the playbook variant) turned into the example's container variant."""
    import yaml

    doc: dict[str, Any] = yaml.safe_load(stack_text)
    regs = state["registries"]
    doc["sites"]["primary"]["registry"] = {"url": regs["aws-registry"]["url"], "vendor": "aws", "provider": "aws"}
    doc["sites"]["alt-b"]["registry"] = {"url": regs["registry-b"]["url"], "vendor": "registry-b"}
    doc["sites"]["alt-b"]["standby"] = "warm"
    web = doc["services"]["web"]
    doc["services"] = {
        "web": {"image": state["app_image"]["reference"], "ports": [8080],
                "env": {"MICROBLOG_TITLE": "microblog (container)"},
                "secrets": {"MICROBLOG_SIGNING_KEY": "file:secrets/db_password"},
                "health": {"path": "/healthz", "port": 8080, "expect_status": 200},
                "databases": web.get("databases", ["blog"]), "buckets": web.get("buckets", ["images"])},
        "status": {"image": state["image"]["reference"], "depends_on": ["web"], "ports": [STATUS_PORT],
                   "command": ["/bin/httpd", "-f", "-p", str(STATUS_PORT), "-h", "/www"],
                   "health": {"path": "/healthz", "port": STATUS_PORT, "expect_status": 200}},
    }
    # The worker is not in this variant: its Redis and its folder (data.redis, data.directories) go with it.
    doc["data"] = {k: v for k, v in doc.get("data", {}).items() if k in ("databases", "buckets")}
    for rec in doc.get("dns", {}).get("records", []):
        rec["service"] = "web"
    text: str = yaml.safe_dump(doc, sort_keys=False)
    return ("# The example's container variant in the lab (liferaft.lab.container_example); see\n"
            "# examples/microblog/liferaft.containers.yaml.\n" + text)

"""The example's container variant (examples/microblog/liferaft.containers.yaml, and the one `lab up` writes) and the
container kind's warm tier; the lab journey is in tests/integration/test_containers_lab.py."""

from __future__ import annotations

from pathlib import Path

import yaml

from liferaft.stack import load_stack

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "microblog" / "liferaft.containers.yaml"


def test_the_container_variant_validates_and_keeps_both_containers_warm() -> None:
    from liferaft.planner.tiers import warm_services
    from liferaft.workloads import workloads
    from liferaft.workloads.base import warm_kind

    stack = load_stack(EXAMPLE)
    assert [(w.name, w.kind) for w in workloads(stack)] == [("web", "container"), ("status", "container")]
    assert all(warm_kind(w) is not None for w in workloads(stack))
    warm = warm_services(stack, "alt-b")
    assert sorted(warm) == ["status", "web"] and all(len(d) == 32 for d in warm.values())


def test_the_warm_digest_follows_the_image_and_the_site(tmp_path: Path) -> None:
    from liferaft.workloads import workload
    from liferaft.workloads.container import Container

    stack = load_stack(EXAMPLE)
    kind = Container()
    first = kind.digest(stack, workload(stack, "web"), "alt-b")
    assert first == kind.digest(stack, workload(stack, "web"), "alt-b")
    assert first != kind.digest(stack, workload(stack, "web"), "primary")  # another registry
    changed = tmp_path / "liferaft.containers.yaml"
    changed.write_text(EXAMPLE.read_text().replace("3e70ceea", "3e70ceeb"))
    other = load_stack(changed)
    assert kind.digest(other, workload(other, "web"), "alt-b") != first


def test_the_lab_writes_the_variant_from_its_stack_file() -> None:
    from liferaft.lab.container_example import container_example_stack

    digest = "sha256:" + "12" * 32
    state = {"registries": {"aws-registry": {"url": "http://10.213.7.1:41005"},
                            "registry-b": {"url": "http://10.213.7.1:41006"}},
             "app_image": {"reference": f"microblog/app@{digest}"},
             "image": {"reference": f"microblog/web@{digest}"}}
    doc = yaml.safe_load(container_example_stack((REPO / "examples" / "microblog" / "liferaft.yaml").read_text(),
                                                 state))
    assert doc["services"]["web"]["image"] == f"microblog/app@{digest}"
    assert doc["services"]["web"]["databases"] == ["blog"] and doc["services"]["web"]["buckets"] == ["images"]
    assert doc["services"]["status"]["depends_on"] == ["web"]
    assert doc["sites"]["alt-b"]["standby"] == "warm"
    assert doc["sites"]["primary"]["registry"]["provider"] == "aws"
    assert doc["data"]["databases"]["blog"]["name"] == "microblog"
    # The playbook variant's worker, its Redis keyspace and its folder are not part of the container variant.
    assert set(doc["services"]) == {"web", "status"}
    assert set(doc["data"]) == {"databases", "buckets"}

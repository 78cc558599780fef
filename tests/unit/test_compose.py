"""`liferaft init --from-compose`: a real compose file (Miniflux's, Apache-2.0, tests/data/compose) and made-up ones
become stack files that validate, with secrets by reference only."""

from __future__ import annotations

from pathlib import Path

import yaml

from liferaft.stack import load_stack
from liferaft.stack.compose import from_compose, split_image
from tests.cli_helpers import invoke

MINIFLUX = Path(__file__).resolve().parents[1] / "data" / "compose" / "miniflux-basic.yml"


def test_miniflux_compose_file_becomes_a_stack_that_validates_without_its_secrets(tmp_path: Path) -> None:
    out = tmp_path / "liferaft.yaml"
    res = invoke("init", str(out), "--from-compose", str(MINIFLUX))
    assert res.exit_code == 0, res.output
    text = out.read_text()
    for value in ("test123", "postgres://miniflux:secret@", "POSTGRES_PASSWORD=secret"):
        assert value not in text  # secret values are never copied
    stack = load_stack(out)
    m = stack.model
    web = m.services["miniflux"]
    assert (web.image, web.ports, web.databases) == ("miniflux/miniflux:latest", [8080], ["db"])
    assert web.env == {"ADMIN_USERNAME": "admin", "CREATE_ADMIN": "1", "DEBUG": "1", "RUN_MIGRATIONS": "1"}
    assert web.secrets == {"ADMIN_PASSWORD": "env:ADMIN_PASSWORD", "DATABASE_URL": "env:DATABASE_URL"}
    db = m.data.databases["db"]
    assert (db.name, db.owner, db.password) == ("miniflux", "miniflux", "env:POSTGRES_PASSWORD")
    assert m.sites["main"].registry is not None and m.sites["main"].registry.url == "https://registry-1.docker.io"
    warnings = " ".join(str(w) for w in stack.warnings)
    assert "bare tag" in warnings and "site 'refuge' names no image `registry`" in warnings
    assert "a PostgreSQL dataset; check `version`" in text
    validated = invoke("validate", str(out))
    assert validated.exit_code == 0, validated.output


def test_hosts_forms_and_databases_that_need_a_human(tmp_path: Path) -> None:
    compose = {"name": "Shop", "services": {
        "api": {"image": "ghcr.io/acme/api:2.1@sha256:" + "c" * 64, "command": "serve --port 9000",
                "ports": [{"target": 9000, "published": 80}, "127.0.0.1:9100:9100/tcp", "7000-7005:7000-7005"],
                "environment": {"STRIPE_API_KEY": "sk_live_not_real_value", "MODE": "prod", "CACHE": None,
                                "UPSTREAM": "https://user:hunter2@api.internal/x", "HOST": "${PUBLIC_HOST}"},
                "depends_on": ["pg", "cache"], "volumes": ["uploads:/srv/uploads", "./conf:/etc/app:ro"]},
        "worker": {"build": "./worker"},
        "pg": {"image": "docker.io/library/postgres:16-alpine",
               "environment": {"POSTGRES_USER": "Shop-Owner", "POSTGRES_DB": "shop", "POSTGRES_PASSWORD": "x"}},
        "cache": {"image": "redis:7"},
        "mysql": {"image": "mariadb:10.11"}}}
    text = from_compose(yaml.safe_dump(compose), str(tmp_path / "compose.yml"))
    for value in ("sk_live_not_real_value", "hunter2"):
        assert value not in text
    path = tmp_path / "liferaft.yaml"
    path.write_text(text)
    m = load_stack(path).model
    assert m.name == "shop"
    api = m.services["api"]
    assert api.image == "acme/api:2.1@sha256:" + "c" * 64
    assert api.command == ["serve", "--port", "9000"]
    assert api.ports == [9000, 9100]
    assert api.secrets == {"STRIPE_API_KEY": "env:STRIPE_API_KEY", "UPSTREAM": "env:UPSTREAM"}
    assert api.env == {"CACHE": "", "HOST": "${PUBLIC_HOST}", "MODE": "prod"}
    assert api.databases == ["pg"]
    assert api.volumes == ["uploads:/srv/uploads"]
    assert m.services["worker"].image == "shop/worker:latest"
    assert set(m.services) == {"api", "worker"}
    assert (m.data.databases["pg"].version, m.data.databases["pg"].owner) == (16, "shop_owner")
    assert m.sites["main"].registry is not None and m.sites["main"].registry.url == "https://ghcr.io"
    assert "compose service 'cache' (image redis:7) is a Redis dataset" in text
    assert "compose service 'mysql' (image mariadb:10.11) is a MySQL/MariaDB database" in text
    assert "built from './worker'" in text and "HOST is interpolated" in text
    assert "bind mounts ['./conf:/etc/app:ro']" in text


def test_image_hosts() -> None:
    assert split_image("postgres:16") == ("registry-1.docker.io", "library/postgres:16")
    assert split_image("docker.io/miniflux/miniflux") == ("registry-1.docker.io", "miniflux/miniflux")
    assert split_image("localhost:5000/app:1") == ("localhost:5000", "app:1")
    assert split_image("quay.io/org/app") == ("quay.io", "org/app")

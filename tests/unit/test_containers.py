"""The container workload kind's model, references and shell lines (its lab test: test_containers_lab.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from liferaft.errors import InvalidInput, UsageError
from liferaft.providers.registry_oci import Image, Registry
from liferaft.stack import load_stack
from liferaft.workloads import kind_of, workloads
from liferaft.workloads.container import env_file, site_registry

REPO = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
API = f"""  api:
    image: team/api@{DIGEST}
    command: [/bin/httpd, -f, -p, "9090"]
    ports: [9090]
    env:
      MODE: "container"
    secrets:
      API_KEY: env:LR_TEST_API_KEY
"""


def _stack(tmp_path: Path, services: str = API, registries: bool = True) -> Path:
    d = tmp_path / "stack"
    shutil.copytree(REPO / "examples" / "microblog", d, ignore=shutil.ignore_patterns("__pycache__"))
    text = (d / "liferaft.yaml").read_text()
    assert "\nservices:\n" in text and "    objects: aws\n" in text and "    objects: objstore\n" in text
    text = text.replace("\nservices:\n", "\nservices:\n" + services, 1)
    if registries:
        text = text.replace("    objects: aws\n", "    objects: aws\n    registry: {url: 'https://123.dkr.ecr.example/"
                            "prod', vendor: aws}\n", 1)
        text = text.replace("    objects: objstore\n", "    objects: objstore\n    registry:\n      url: "
                            "http://10.0.0.5:5000\n      username: env:LR_REG_USER\n      password: env:LR_REG_PW\n", 1)
    (d / "liferaft.yaml").write_text(text)
    return d / "liferaft.yaml"


def _problems(path: Path) -> list[str]:
    with pytest.raises(InvalidInput) as exc:
        load_stack(path)
    return [str(p) for p in exc.value.problems]


def test_a_service_with_an_image_is_a_container_workload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = load_stack(_stack(tmp_path))
    kinds = {w.name: w.kind for w in workloads(stack)}
    assert kinds == {"web": "playbook", "worker": "playbook", "api": "container"}
    api = next(w for w in workloads(stack) if w.name == "api")
    assert kind_of(api).name == "container"
    assert stack.model.services["api"].runs == f"image team/api@{DIGEST}"
    monkeypatch.setenv("LR_REG_USER", "robot")
    monkeypatch.setenv("LR_REG_PW", "pw-not-real")
    alt = site_registry(stack, "alt-b")
    assert (alt.host, alt.vendor, alt.secure, alt.username) == ("10.0.0.5:5000", "10.0.0.5:5000", False, "robot")
    primary = site_registry(stack, "primary")
    assert primary.pull_ref(Image.parse(stack.model.services["api"].image or "")) == \
        f"123.dkr.ecr.example/prod/team/api@{DIGEST}"
    assert primary.vendor == "aws" and primary.auth_json() is None
    assert '"10.0.0.5:5000"' in (alt.auth_json() or "")


def test_a_site_without_a_registry_says_so(tmp_path: Path) -> None:
    stack = load_stack(_stack(tmp_path, registries=False))
    with pytest.raises(UsageError, match="names no image registry"):
        site_registry(stack, "alt-b")


@pytest.mark.parametrize(("service", "expected"), [
    ("  api:\n    playbook: microblog.yml\n    image: team/api:1\n", "not both and not neither"),
    ("  api:\n    ports: [80]\n", "not both and not neither"),
    ("  api:\n    image: ghcr.io/team/api:1\n", "without the registry's host"),
    ("  api:\n    image: Team/API\n", "services.api.image"),
    ("  api:\n    image: team/api\n    artifact: app\n", "ships in its image"),
    ("  api:\n    playbook: microblog.yml\n    command: [x]\n", "`command` goes with `image`"),
    ("  api:\n    playbook: microblog.yml\n    volumes: ['data:/data']\n", "`volumes` go with `image`"),
    ("  api:\n    image: team/api\n    volumes: ['data']\n", "services.api.volumes"),
])
def test_bad_container_services_are_refused(tmp_path: Path, service: str, expected: str) -> None:
    problems = _problems(_stack(tmp_path, service))
    assert any(expected in p for p in problems), problems


def test_a_registry_needs_both_credentials_or_neither(tmp_path: Path) -> None:
    path = _stack(tmp_path)
    path.write_text(path.read_text().replace("      password: env:LR_REG_PW\n", ""))
    assert any("both `username` and `password`" in p for p in _problems(path))


@pytest.mark.parametrize(("ref", "repo", "tag", "digest"), [
    ("web", "web", None, None),
    ("team/web:1.2", "team/web", "1.2", None),
    (f"team/web@{DIGEST}", "team/web", None, DIGEST),
    (f"team/web:1@{DIGEST}", "team/web", "1", DIGEST),
])
def test_image_references(ref: str, repo: str, tag: str | None, digest: str | None) -> None:
    img = Image.parse(ref)
    assert (img.repository, img.tag, img.digest, str(img)) == (repo, tag, digest, ref)
    assert img.pinned is (digest is not None)
    assert img.reference == (digest or tag or "latest")
    assert Registry("http://r:5000", "x").pull_ref(img) == f"r:5000/{repo}" + (f"@{digest}" if digest else
                                                                               f":{tag or 'latest'}")


def test_the_env_file_holds_one_line_per_setting_and_refuses_a_line_break_without_echoing_it() -> None:
    assert env_file({"B": "2", "A": "x=y z"}) == "A=x=y z\nB=2\n"
    with pytest.raises(UsageError) as exc:
        env_file({"KEY": "-----BEGIN-----\nsecret-material"})
    assert "KEY" in str(exc.value) and "secret-material" not in str(exc.value)


def test_teardown_removes_container_images_and_files(tmp_path: Path) -> None:
    stack = load_stack(_stack(tmp_path))
    api = [w for w in workloads(stack) if w.name == "api"]
    text = "\n".join(kind_of(api[0]).teardown_lines(stack, api))
    for needed in ("podman stop -i -t 10 liferaft-api", "podman rm -f -i -t 5 liferaft-api", "podman rmi -f",
                   "/etc/liferaft/api/images", "rm -rf /etc/liferaft/api /opt/liferaft/api",
                   "podman volume ls -q --filter label=liferaft.service=api"):
        assert needed in text


def test_validate_warns_on_a_bare_tag_and_a_site_without_a_registry(tmp_path: Path) -> None:
    pinned = load_stack(_stack(tmp_path / "p"))
    assert not [w for w in pinned.warnings if "bare tag" in str(w) or "names no image" in str(w)]
    tagged = load_stack(_stack(tmp_path / "t", API.replace(f"team/api@{DIGEST}", "team/api:1.4"), registries=False))
    texts = [str(w) for w in tagged.warnings]
    assert any("services.api.image" in t and "bare tag" in t and "team/api@sha256:<digest>" in t for t in texts)
    assert any("site 'alt-b' names no image `registry`" in t for t in texts), texts


def test_audit_flags_images_only_at_the_primary_vendor_and_bare_tags(tmp_path: Path) -> None:
    from liferaft.audit import audit

    def findings(path: Path) -> list[tuple[str, str]]:
        report = audit(load_stack(path), check_ns=False)
        return [(f.severity, f.message) for f in report.findings if f.layer == "container images"]

    assert findings(_stack(tmp_path / "ok")) == []  # alt-b's registry is elsewhere, the image pinned
    path = _stack(tmp_path / "bad", API.replace(f"team/api@{DIGEST}", "team/api:1.4"))
    path.write_text(path.read_text().replace("      url: http://10.0.0.5:5000\n",
                                             "      url: http://10.0.0.5:5000\n      vendor: aws\n"))
    got = findings(path)
    assert [s for s, _ in got] == ["critical", "warning"]
    assert "only at the primary vendor's registry" in got[0][1] and "bare tag" in got[1][1]


def test_a_container_gets_its_databases_and_buckets_as_environment(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from liferaft.configure import TargetHost
    from liferaft.workloads.container import data_env

    path = _stack(tmp_path, API.replace("    ports: [9090]\n", "    ports: [9090]\n    databases: [blog]\n"
                                        "    buckets: [images]\n"))
    secrets_dir = path.parent / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    for name in ("aws_access_key_id", "aws_secret_access_key", "db_password", "s3rver_key", "s3rver_secret"):
        (secrets_dir / name).write_text(f"not-a-real-{name}\n")
    monkeypatch.setenv("LR_TEST_API_KEY", "not-a-real-api-key")
    stack = load_stack(path)
    host = TargetHost(name="b", address="10.9.8.7", port=22, user="root", host_keys=("ssh-ed25519 AAAA",))
    plain, secret = data_env(stack, "api", "alt-b", host)
    assert plain["LIFERAFT_DB_BLOG_HOST"] == "10.9.8.7" and plain["LIFERAFT_DB_BLOG_USER"] == "microblog"
    assert plain["LIFERAFT_BUCKET_IMAGES_NAME"] == "microblog-images"
    assert secret == {"LIFERAFT_DB_BLOG_PASSWORD": "not-a-real-db_password",
                      "LIFERAFT_BUCKET_IMAGES_ACCESS_KEY_ID": "not-a-real-s3rver_key",
                      "LIFERAFT_BUCKET_IMAGES_SECRET_ACCESS_KEY": "not-a-real-s3rver_secret"}
    assert not any(v.startswith("not-a-real") for v in plain.values())


def test_an_ecr_registry_logs_in_through_an_aws_provider(tmp_path: Path) -> None:
    path = _stack(tmp_path / "ok")
    path.write_text(path.read_text().replace("vendor: aws}", "vendor: aws, provider: aws}"))
    assert load_stack(path).model.sites["primary"].registry.provider == "aws"  # type: ignore[union-attr]
    bad = _stack(tmp_path / "bad")
    bad.write_text(bad.read_text().replace("vendor: aws}", "vendor: aws, provider: objstore}"))
    assert any("logs in through an `aws` provider" in p for p in _problems(bad))
    both = _stack(tmp_path / "both")
    both.write_text(both.read_text().replace("      username: env:LR_REG_USER\n",
                                             "      username: env:LR_REG_USER\n      provider: aws\n"))
    assert any("either `provider`" in p for p in _problems(both))

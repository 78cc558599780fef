"""Nothing outside liferaft/providers/ (and the lab) may import boto3, botocore or libcloud: vendors stay behind
the registry. And importing the registry or the providers CLI must not load any SDK (fast `--help`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import liferaft

PACKAGE = Path(liferaft.__file__).parent
SDKS = ("boto3", "botocore", "libcloud")
ALLOWED = ("providers", "lab")  # top-level folders of liferaft/ that may talk to vendors' SDKs


def sdk_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names = [str(node.args[0].value)]
        found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {n}" for n in names
                  if n.split(".")[0] in SDKS]
    return found


def test_no_sdk_imports_outside_providers_and_lab() -> None:
    """boto3/botocore/libcloud imports appear only under liferaft/providers/ and liferaft/lab/."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ALLOWED:
            continue
        offenders += sdk_imports(path)
    assert offenders == [], "SDK imports outside liferaft/providers/:\n" + "\n".join(offenders)


def test_the_check_sees_an_import(tmp_path: Path) -> None:
    """The scanner itself finds plain, from- and dynamic imports (so the test above can fail)."""
    probe = PACKAGE / "_boundary_probe_tmp.py"
    probe.write_text("import boto3\nfrom libcloud.storage.providers import get_driver\n"
                     "import importlib\nimportlib.import_module('botocore.config')\n")
    try:
        assert len(sdk_imports(probe)) == 3
    finally:
        probe.unlink()


def test_registry_and_cli_import_no_sdk() -> None:
    """Importing the registry, the base protocols and `liferaft providers` loads no SDK."""
    code = ("import sys, liferaft.providers.registry, liferaft.providers.base, liferaft.cli.providers\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {SDKS!r}]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

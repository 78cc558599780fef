"""`pip install .` ships what liferaft needs at run time: playbooks, Terraform modules, the starter stack file."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_contains_package_data(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("liferaft-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("liferaft/playbooks/microblog.yml", "liferaft/playbooks/postgresql.yml",
                   "liferaft/playbooks/prepare.yml", "liferaft/terraform/modules/aws-site/main.tf",
                   "liferaft/terraform/modules/digitalocean-site/main.tf", "liferaft/stack/starter.yaml"):
        assert needed in names, needed
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "liferaft = liferaft.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    assert not any("__pycache__" in n for n in names)

"""`make demo` (scripts/demo.sh) leaves nothing in the checkout: its drill reports go to the state dir."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STUB = """#!/bin/sh
printf '%s\\n' "$*" >> "$STUB_LOG"
if [ "$*" = "lab status --json" ]; then
  echo '{"stack_file": "/nowhere/liferaft.yaml", "alternate_sites": ["alt-b"]}'
fi
exit 0
"""


def _demo(tmp_path: Path, **env: str) -> list[str]:
    """Run scripts/demo.sh with a stub `liferaft` first on PATH; the stub's argument lines."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "liferaft").write_text(STUB)
    (bindir / "liferaft").chmod(0o755)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LIFERAFT_", "XDG_"))}
    cp = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], cwd=tmp_path, capture_output=True, text=True,
                        timeout=60, check=False, env={**base, "PATH": f"{bindir}:{os.environ['PATH']}",
                                                     "STUB_LOG": str(log), "HOME": str(tmp_path / "home"), **env})
    assert cp.returncode == 0, cp.stderr
    return log.read_text().splitlines()


def _report_dir(calls: list[str]) -> Path:
    (drill,) = [shlex.split(c) for c in calls if c.startswith("drill --to")]
    report = drill[drill.index("--report") + 1]
    return (REPO / report).resolve()  # the demo runs from the checkout: a relative path would land in it


def test_demo_writes_its_drill_reports_into_the_state_dir_not_the_checkout(tmp_path: Path) -> None:
    report = _report_dir(_demo(tmp_path))
    assert report == tmp_path / "home" / ".local" / "state" / "liferaft" / "reports"
    assert REPO not in report.parents
    state = tmp_path / "state"
    assert _report_dir(_demo(tmp_path, LIFERAFT_STATE_DIR=str(state))) == state / "reports"


def test_gitignore_covers_reports_left_by_older_demos() -> None:
    """A `reports/` folder an older `make demo` left in the checkout never shows in `git status`."""
    cp = subprocess.run(["git", "check-ignore", "-q", "--no-index", "reports/drill.md"], cwd=REPO, check=False)
    assert cp.returncode == 0

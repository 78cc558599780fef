"""`liferaft --help` stays fast: it imports none of the SDKs."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("boto3", "botocore", "libcloud", "ansible", "ansible_runner", "psycopg", "dns", "rich", "pydantic", "hcloud",
         "requests", "cryptography")


def test_help_imports_no_sdk() -> None:
    code = (
        "import sys\n"
        "from liferaft.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('\\n' + __import__('json').dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"--help imported {loaded}"
    assert "failover" in out.stdout or "Commands" in out.stdout

"""Input files that are not small regular files: devices, FIFOs, directories and symlink loops, as the stack file or
as a `file:` secret. Each is refused promptly with a clear error naming the path (never read whole, never a hang,
never a traceback). Run as real processes with a memory cap and a timeout, so the unfixed behaviour (reading
/dev/zero into memory, blocking on a FIFO) fails the test instead of taking the machine down or hanging it."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_reliability_input import _example

pytestmark = pytest.mark.reliability

REPO = Path(__file__).resolve().parents[2]


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def _liferaft(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LIFERAFT_STATE_DIR": str((cwd or Path("/tmp")) / "state")}
    try:
        return subprocess.run([sys.executable, "-m", "liferaft", *args], capture_output=True, text=True, env=env,
                              timeout=30, preexec_fn=_cap_memory, cwd=cwd, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"liferaft {' '.join(args)} hung")


def _assert_refused(out: subprocess.CompletedProcess[str], path: str, words: str) -> None:
    expected = 78 if "health" in out.args[3:] else 2  # health's own code for an invalid stack file (EX_CONFIG)
    assert out.returncode == expected, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and "internal error" not in out.stderr, out.stderr
    assert path in out.stderr and words in out.stderr, out.stderr


@pytest.mark.parametrize("args", [("--stack", "/dev/zero", "validate"), ("validate", "/dev/zero"),
                                  ("--stack", "/dev/urandom", "validate"), ("--stack", "/dev/zero", "health"),
                                  ("--stack", "/dev/zero", "audit")])
def test_device_as_stack_file_is_refused_without_reading_it(tmp_path: Path, args: tuple[str, ...]) -> None:
    """A device (st_size 0, endless bytes) is refused as 'not a regular file', never read into memory."""
    _assert_refused(_liferaft(*args, cwd=tmp_path), args[1],  # the path is the second word either way
                    "not a regular file")


@pytest.mark.parametrize("command", ["validate", "health", "runs"])
def test_fifo_as_stack_file_is_refused_not_waited_on(tmp_path: Path, command: str) -> None:
    """A FIFO with no writer would block open() and read() forever: it is refused at once."""
    fifo = tmp_path / "liferaft.yaml"
    os.mkfifo(fifo)
    _assert_refused(_liferaft("--stack", str(fifo), command, cwd=tmp_path), str(fifo), "FIFO")


def test_symlink_to_a_device_or_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "a.yaml").symlink_to("/dev/zero")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "pipe")
    for link in ("a.yaml", "b.yaml"):
        _assert_refused(_liferaft("--stack", str(tmp_path / link), "validate", cwd=tmp_path), link,
                        "not a regular file")


def test_symlink_loop_as_stack_file_is_a_clear_error(tmp_path: Path) -> None:
    """`a -> b -> a`: a usage error naming the file, not 'internal error: RuntimeError: Symlink loop'."""
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    for command in ("validate", "audit", "health"):
        _assert_refused(_liferaft("--stack", str(tmp_path / "a.yaml"), command, cwd=tmp_path), "a.yaml",
                        "symlink loop")


def test_symlink_loop_as_a_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    """A `file:` secret that is a symlink loop: validate and audit still work (they never read the value), and
    --check-secrets names the reference."""
    stack = _example(tmp_path / "stack")
    secret = tmp_path / "stack" / "secrets" / "db_password"
    secret.unlink()
    secret.symlink_to(tmp_path / "stack" / "secrets" / "loop2")
    (tmp_path / "stack" / "secrets" / "loop2").symlink_to(secret)
    out = _liferaft("--stack", str(stack), "validate", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    out = _liferaft("--stack", str(stack), "audit", "--no-dns", "--json", cwd=tmp_path)
    assert out.returncode in (0, 1) and "Traceback" not in out.stderr and "internal error" not in out.stderr, \
        out.stderr
    out = _liferaft("--stack", str(stack), "validate", "--check-secrets", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "file:secrets/db_password: a symlink loop" in out.stderr, out.stderr


def test_secret_on_a_fifo_or_device_through_a_symlink_is_refused(tmp_path: Path) -> None:
    """The stack file's rules hold for secrets too: the FIFO is not waited on, the device not read."""
    stack = _example(tmp_path / "stack")
    secrets = tmp_path / "stack" / "secrets"
    os.mkfifo(tmp_path / "pipe")
    (secrets / "db_password").unlink()
    (secrets / "db_password").symlink_to(tmp_path / "pipe")
    (secrets / "pdns_api_key").unlink()
    (secrets / "pdns_api_key").symlink_to("/dev/urandom")
    out = _liferaft("--stack", str(stack), "validate", "--check-secrets", cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "file:secrets/db_password: a FIFO" in out.stderr
    assert "file:secrets/pdns_api_key: a device" in out.stderr


def test_read_limited_never_trusts_st_size(tmp_path: Path) -> None:
    """The cap holds on what is read, not on what stat says (a file growing between stat and read)."""
    from liferaft.stack._files import Refused, read_limited

    f = tmp_path / "f"
    f.write_bytes(b"x" * 100)
    assert read_limited(f, 100) == b"x" * 100
    with pytest.raises(Refused, match="larger than 99 bytes"):
        read_limited(f, 99)

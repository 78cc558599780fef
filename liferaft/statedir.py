"""liferaft's state directory: where it is by default, and its folders made owner-only (0700).

Journals, manifests, provider files and readiness records are nobody else's business, so every folder liferaft
creates in the state directory is 0700 whatever the umask. Standard library only: the CLI imports this at start-up.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_state_dir() -> Path:
    """$XDG_STATE_HOME/liferaft, else ~/.local/state/liferaft."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "liferaft"


def owner_only_dir(path: str | os.PathLike[str], *, parents_from: str | os.PathLike[str] | None = None) -> Path:
    """Create `path` (and missing parents) as 0700 and make sure it is 0700, and so is every folder below
    `parents_from` (exclusive) on the way to it: mkdir(parents=True) creates those with the umask's mode."""
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    folders = [d]
    if parents_from is not None and Path(parents_from) in d.parents:
        for parent in d.parents:  # nearest first, up to (not including) parents_from
            if parent == Path(parents_from):
                break
            folders.append(parent)
    for folder in folders:
        try:
            os.chmod(folder, 0o700)
        except OSError:  # not ours to change (e.g. a shared parent): the folder itself was made 0700
            pass
    return d


def write_atomic(path: Path, text: str, mode: int) -> None:
    """Replace `path` with `text` as a whole: a temp file in the same directory (created 0600), written and fsynced,
    given `mode`, then renamed over `path`; readers see the old file or the new one, never half of one. The temp
    file (`.<name>.<random>.tmp`) is removed when anything fails."""
    import tempfile  # not at start-up: the CLI imports this module

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

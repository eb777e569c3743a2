"""Small shared helpers: logging, atomic outputs, readable errors."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class AsrkdError(Exception):
    """A user-facing error: its message is one line naming file, line and reason."""


def setup_logging(verbose: int = 0) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s [%(module)s] %(message)s",
        datefmt="%H:%M:%S",
    )


@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator:
    """Open `path.tmp` for writing and rename it to `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def relocate_scp(scp: str | Path, old_dir: Path, new_dir: Path) -> None:
    """Point an scp written inside an output's temporary dir (`Output.writing`) at its final place."""
    scp = Path(scp)
    scp.write_text(scp.read_text().replace(str(old_dir), str(new_dir)))


def read_json(path: str | Path) -> dict | None:
    """A JSON file's content, or None when the file does not exist."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def write_list(path: str | Path, lines) -> None:
    """Write one item per line, atomically."""
    with atomic_file(path) as f:
        for line in lines:
            f.write(f"{line}\n")


@contextmanager
def new_ark(stem: str | Path) -> Iterator[Path]:
    """Yield a fresh ark path `<stem>.<tag>.ark` for a table that is being rewritten: the old
    ark stays intact until the block (which commits the new scp) succeeds, then older
    `<stem>.*.ark` files are removed; on failure the new ark is removed instead."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    ark = stem.with_name(f"{stem.name}.{uuid.uuid4().hex[:8]}.ark")
    try:
        yield ark
    except BaseException:
        ark.unlink(missing_ok=True)
        raise
    for old in stem.parent.glob(f"{stem.name}.*.ark"):
        if old != ark:
            old.unlink()


def die_with_parent() -> None:
    """Worker initializer: the kernel kills this process when its parent dies (even by kill -9)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before prctl
        os._exit(1)

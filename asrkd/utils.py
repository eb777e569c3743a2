"""Small shared helpers: logging, atomic outputs, readable errors."""

from __future__ import annotations

import logging
import os
import shutil
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


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield `path.tmp`, an empty directory, and move it to `path` when the block succeeds.

    An existing `path` is replaced, so callers decide beforehand whether to skip.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.rename(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def relocate_scp(scp: str | Path, old_dir: Path, new_dir: Path) -> None:
    """Point an scp written inside `atomic_dir`'s temporary dir at the dir's final place."""
    scp = Path(scp)
    scp.write_text(scp.read_text().replace(str(old_dir), str(new_dir)))


def write_list(path: str | Path, lines) -> None:
    """Write one item per line, atomically."""
    with atomic_file(path) as f:
        for line in lines:
            f.write(f"{line}\n")

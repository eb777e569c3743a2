"""Checkpoints and model files: written atomically, read with `weights_only=True`, and
tagged with what produced them: `meta` (options and data), which training must match to
resume, and `environment` (commit, packages, CPU, threads: `asrkd.environment`), which it need not."""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path

import torch

from asrkd.environment import environment
from asrkd.utils import AsrkdError, atomic_file


def fingerprint(*files: str | Path) -> str:
    """SHA-1 of the files' bytes (tables such as feats.scp or ali.scp): names the data a run used."""
    h = hashlib.sha1()
    for f in files:
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, state: dict, meta: dict | None = None, env: dict | None = None) -> None:
    """torch.save `state` (tensors, numbers, strings, lists, dicts) plus `meta` and `env`
    (default: this process's `environment()`, on the CPU) atomically."""
    with atomic_file(path, "wb") as f:
        torch.save({**state, "meta": meta or {}, "environment": env or environment()}, f)


def read_environment(path: str | Path) -> dict | None:
    """The environment a checkpoint was saved in, without reading its tensors; None for a
    file saved without one or not readable."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError):
        return None
    return state.get("environment") if isinstance(state, dict) else None


def load_checkpoint(path: str | Path, meta: dict | None = None) -> dict:
    """Load a checkpoint saved by `save_checkpoint`. With `meta`, every key present in both must
    match, otherwise a one-line error names the first that differs (resume needs --force)."""
    path = Path(path)
    if not path.is_file():
        raise AsrkdError(f"{path}: no such file")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, IndexError, ValueError,
            KeyError) as e:
        raise AsrkdError(f"{path}: not a readable asrkd checkpoint ({type(e).__name__}); "
                         "delete it or retrain with --force") from None
    if not isinstance(state, dict):
        raise AsrkdError(f"{path}: not an asrkd checkpoint")
    saved = state.get("meta", {})
    for key, value in (meta or {}).items():
        if key in saved and saved[key] != value:
            raise AsrkdError(f"{path}: was made with {key}={saved[key]!r}, now {value!r}; "
                             "use --force to start again")
    return state

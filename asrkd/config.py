"""YAML configs as dataclasses: unknown keys and wrong types are one-line errors, and the
config a stage used is copied into its exp dir."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import TypeVar

import yaml

from asrkd.utils import AsrkdError, atomic_file

C = TypeVar("C")


def check_type(path, key: str, value, hint) -> object:
    """`value` converted to the field's type (int -> float allowed), or a one-line error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is list:
        if not isinstance(value, list):
            raise AsrkdError(f"{path}: '{key}' must be a list, got {value!r}")
        return [check_type(path, key, v, args[0]) for v in value]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return check_type(path, key, value, next(a for a in args if a is not type(None)))
    if isinstance(hint, type) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise AsrkdError(f"{path}: '{key}' must be {hint.__name__}, got {value!r}")
    return value


def load_config(cls: type[C], path: str | Path | None) -> C:
    """Read a dataclass `cls` from YAML (None: the defaults)."""
    values = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise AsrkdError(f"{path}: config file not found")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise AsrkdError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise AsrkdError(f"{path}: expected a mapping of options")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise AsrkdError(f"{path or cls.__name__}: unknown options {unknown} (known: {sorted(known)})")
    return cls(**{k: check_type(path or cls.__name__, k, v, hints[k]) for k, v in values.items()})


def save_config(cfg, path: str | Path) -> None:
    """Write a dataclass as YAML (atomically), e.g. into the exp dir that used it."""
    with atomic_file(path) as f:
        yaml.safe_dump(dataclasses.asdict(cfg), f, sort_keys=False)

"""What made an output, and from what: the record every asrkd output carries.

An output (a directory, or a file such as a frame-accuracy JSON) has a record, `.asrkd.json`
inside a directory or `.<name>.asrkd.json` beside a file: the command that wrote it, the
options that change its content, a fingerprint of each input, a random id that names this
writing of it, and whether it is finished. With it:

- a rerun skips an output only when it was finished with the same options and inputs; a
  difference is a one-line error naming it (`--force` redoes it);
- an existing, non-empty path without a record, or with another command's, is never written
  into or replaced, not even with `--force`;
- `--force` moves the old output aside (`.<name>.old`) and removes it once the new one is
  finished, so a killed rerun loses nothing a rerun would mistake for finished;
- one writer at a time: a lock beside the output (`.<name>.lock`, flock) stops a second one
  with "already being written by pid N"; the kernel drops a dead writer's lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from asrkd.utils import AsrkdError

log = logging.getLogger(__name__)

RECORD = ".asrkd.json"
_locks: dict[Path, object] = {}  # outputs this process holds the lock of


def is_file_output(path: Path) -> bool:
    """File outputs are JSON files; everything else asrkd writes is a directory."""
    return path.is_file() or (path.suffix == ".json" and not path.is_dir())


def record_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.asrkd.json") if is_file_output(path) else path / RECORD


def _nested_output(entry: Path) -> bool:
    """Whether a dir entry is a `log/` dir or belongs to another output nested there: a dir
    with a record, a file with a record beside it, or such a record or lock."""
    name = entry.name
    if name == "log" or (name != RECORD and name.startswith(".") and name.endswith((".asrkd.json", ".lock"))):
        return True
    return (entry / RECORD).is_file() if entry.is_dir() else entry.with_name(f".{name}.asrkd.json").is_file()


def _has_content(path: Path) -> bool:
    """A file, or a dir holding more than a `log/` dir (where recipes log a command's run)."""
    return path.is_file() or (path.is_dir() and any(not _nested_output(e) for e in path.iterdir()))


def read_record(path: str | Path) -> dict | None:
    """The record of the output at `path`, or None; an unreadable one is an error."""
    rec = record_path(path)
    if not rec.is_file():
        return None
    try:
        record = json.loads(rec.read_text())
        if not {"command", "options", "inputs", "id", "finished"} <= set(record):
            raise ValueError("keys missing")
    except ValueError as e:
        raise AsrkdError(f"{rec}: corrupt output record ({e}); move {path} away or remove it") from None
    return record


def fingerprint(path: str | Path) -> str:
    """An input's identity: an asrkd output by the id of its writing, except a data dir (which
    compute-fbank and compute-cmvn-stats add to), a file by its bytes and a dir by the bytes
    of the files directly in it (not dot files, not subdirs)."""
    path = Path(path)
    if not path.exists():
        raise AsrkdError(f"{path}: no such file or directory")
    h = hashlib.sha1()
    data_dir = path.is_dir() and (path / "utt2spk").is_file()
    if not data_dir and (rec := read_record(path)) is not None and rec["finished"]:
        return rec["id"]
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith("."))
    else:
        files = [path]
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _plain(value):
    """Options as JSON keeps them (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(value, default=str))


class Output:
    """One output of `command` at `path`, made with `options` from `inputs` (name -> path)."""

    def __init__(self, path: str | Path, command: str, options: dict | None = None, inputs: dict | None = None,
                 fingerprints: dict | None = None):
        """`inputs` are paths, fingerprinted here; `fingerprints` are ready ones (of data in memory)."""
        self.path = Path(path)
        self.command = command
        self.options = _plain(options or {})
        self.inputs = {k: fingerprint(v) for k, v in (inputs or {}).items() if v is not None}
        self.inputs |= {k: str(v) for k, v in (fingerprints or {}).items() if v is not None}
        self.aside = self.path.with_name(f".{self.path.name}.old")

    def differences(self, record: dict) -> list[str]:
        """What differs between a record and this output's options and inputs, in words."""
        diff = [f"{k}={record['options'].get(k)!r} (now {v!r})" for k, v in self.options.items()
                if record["options"].get(k) != v]
        diff += [f"another {k}" if k in record["inputs"] else f"no {k} (now one)"
                 for k, v in self.inputs.items() if record["inputs"].get(k) != v]
        return diff + [f"a {k} (now none)" for k in record["inputs"] if k not in self.inputs]

    def key(self) -> str:
        """What this output is made from and with, as a short hash (names the jobs' results)."""
        what = json.dumps([self.command, self.options, self.inputs], sort_keys=True)
        return hashlib.sha1(what.encode()).hexdigest()[:12]

    def done(self, force: bool = False) -> bool:
        """True when a finished output with these options and inputs exists (skip it). False when
        it must be made: nothing there, a resumable unfinished one, or `force` (the old one is
        then moved aside). Raises for a different or foreign output. Takes the lock."""
        record = self.owned()
        self.lock()
        if record is None:
            return False
        diff = self.differences(record)
        if force:
            self.move_aside()
            return False
        if diff:
            raise AsrkdError(f"{self.path}: made with {', '.join(diff)}; rerun with --force to redo it")
        if record["finished"]:
            log.info("%s: done already with the same options and inputs, skipping (--force redoes it)", self.path)
            self.unlock()
            return True
        return False

    def owned(self) -> dict | None:
        """The record of what is at the path now (None: nothing, or an empty dir); raises when
        something is there that this command did not write."""
        record = read_record(self.path)
        if record is None and _has_content(self.path):
            raise AsrkdError(f"{self.path}: exists and was not written by `asrkd {self.command}`; "
                             "give another output path or move it away")
        if record is not None and record["command"] != self.command:
            raise AsrkdError(f"{self.path}: written by `asrkd {record['command']}`, not `asrkd {self.command}`; "
                             "give another output path")
        return record

    def record(self, finished: bool) -> dict:
        return {"command": self.command, "options": self.options, "inputs": self.inputs,
                "id": uuid.uuid4().hex, "finished": finished}

    def _write_record(self, where: Path, finished: bool) -> None:
        rec = record_path(where)
        tmp = rec.with_name(rec.name + ".tmp")
        tmp.write_text(json.dumps(self.record(finished), indent=1) + "\n")
        os.replace(tmp, rec)

    def start(self) -> None:
        """An output written in place (a training dir that resumes): create it, unfinished."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._write_record(self.path, finished=False)

    def finish(self) -> None:
        """Mark an output written in place finished (the record is written last), drop the old one."""
        self._write_record(self.path, finished=True)
        self._drop_aside()
        self.unlock()

    @contextmanager
    def writing(self) -> Iterator[Path]:
        """Yield an empty temporary dir (or file path) next to the output; on success it becomes
        the output, finished: the old one is renamed aside first, then removed. On failure the
        temporary one is removed and the old one stays."""
        self.owned()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        if tmp.is_dir():
            shutil.rmtree(tmp)
        tmp.unlink(missing_ok=True)
        is_file = is_file_output(self.path)
        if not is_file:
            tmp.mkdir(parents=True)
        self.lock()
        try:
            yield tmp
            if is_file:
                if self.path.exists():
                    self.move_aside()
                os.rename(tmp, self.path)
                self._write_record(self.path, finished=True)
            else:
                self._write_record(tmp, finished=True)
                if _has_content(self.path):
                    self.move_aside()
                if self.path.is_dir():  # what stays (the run's log/, nested outputs) goes with the new one
                    for e in self.path.iterdir():
                        os.rename(e, (tmp if not (tmp / e.name).exists() else self._aside_dir()) / e.name)
                    self.path.rmdir()
                os.rename(tmp, self.path)
            self._drop_aside()
        finally:
            if tmp.is_dir():
                shutil.rmtree(tmp)
            tmp.unlink(missing_ok=True)
        self.unlock()

    def move_aside(self) -> None:
        """Move the old output (ours: it has our record) to `.<name>.old`. A dir keeps its `log/`
        and the outputs of other commands nested in it (a model dir's graph, decodes and
        frame-accuracy files, with their records and locks): they are not this output's to
        remove, and their records name the model they were made from. The record is marked
        unfinished first and moved last, so a kill midway leaves an unfinished output, never
        a finished one with parts missing."""
        self._drop_aside()
        if (rec := read_record(self.path)) is not None:
            record_path(self.path).write_text(json.dumps(rec | {"finished": False}))
        if self.path.is_dir():
            self.aside.mkdir()
            for e in sorted(self.path.iterdir(), key=lambda e: e.name == RECORD):
                if not _nested_output(e):
                    os.rename(e, self.aside / e.name)
        elif self.path.exists():
            os.rename(self.path, self.aside)
            record_path(self.path).unlink(missing_ok=True)

    def _aside_dir(self) -> Path:
        self.aside.mkdir(exist_ok=True)
        return self.aside

    def _drop_aside(self) -> None:
        if self.aside.is_dir():
            shutil.rmtree(self.aside)
        else:
            self.aside.unlink(missing_ok=True)

    def lock(self) -> None:
        """Take the output's lock, or fail in one line naming the process that holds it."""
        key = self.path.resolve()
        if key in _locks:
            return
        lock = self.path.with_name(f".{self.path.name}.lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "?"
            f.close()
            raise AsrkdError(f"{self.path}: already being written by pid {pid}") from None
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        _locks[key] = f

    def unlock(self) -> None:
        f = _locks.pop(self.path.resolve(), None)
        if f is not None:
            f.close()

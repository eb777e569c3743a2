"""Kaldi data directories: read, write, validate, subset, combine and fix.

A data dir holds text tables keyed by utterance (`wav.scp`, `text`, `utt2spk`,
`feats.scp`, `utt2num_frames`, `utt2dur`) or by speaker (`spk2utt`,
`spk2gender`, `spk2age` (whole years; for per-age-group results), `cmvn.scp`), each sorted in C (byte) order, one `key value` per line.
"""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
from collections import defaultdict
from pathlib import Path

from asrkd.outputs import Output
from asrkd.utils import AsrkdError, atomic_file

log = logging.getLogger(__name__)

UTT_TABLES = ("wav.scp", "text", "utt2spk", "feats.scp", "utt2num_frames", "utt2dur")
SPK_INFO = ("spk2gender", "spk2age")  # what a corpus says of its speakers
SPK_TABLES = (*SPK_INFO, "cmvn.scp")
REQUIRED = ("wav.scp", "text", "utt2spk", "spk2utt")


def sort_key(key: str) -> bytes:
    """Kaldi sorts tables with `LC_ALL=C sort`, i.e. by bytes."""
    return key.encode("utf-8")


def read_table(path: str | Path, allow_empty_value: bool = False) -> dict[str, str]:
    """Read a `key value` table into an ordered dict; one-line errors name file and line."""
    path = Path(path)
    if not path.is_file():
        raise AsrkdError(f"{path}: no such file")
    table: dict[str, str] = {}
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\n")
            except UnicodeDecodeError as e:
                raise AsrkdError(f"{path}:{n}: not UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                raise AsrkdError(f"{path}:{n}: empty line")
            key, *rest = line.strip().split(maxsplit=1)
            value = rest[0] if rest else ""
            if not value and not allow_empty_value:
                raise AsrkdError(f"{path}:{n}: key '{key}' has no value")
            if key in table:
                raise AsrkdError(f"{path}:{n}: duplicate key '{key}'")
            table[key] = value
    return table


def write_table(path: str | Path, table: dict[str, str]) -> None:
    """Write a table sorted by key (C order), atomically."""
    with atomic_file(path) as f:
        for key in sorted(table, key=sort_key):
            f.write(f"{key} {table[key]}\n".replace(" \n", "\n"))


def read_utt2spk(data_dir: str | Path, utts) -> dict[str, str]:
    """The data dir's utt2spk, which must name the speaker of every utterance in `utts`."""
    utt2spk = read_table(Path(data_dir) / "utt2spk")
    missing = [u for u in utts if u not in utt2spk]
    if missing:
        raise AsrkdError(f"{Path(data_dir) / 'utt2spk'}: no speaker for {len(missing)} utterances (e.g. {missing[0]})")
    return utt2spk


def utt2spk_to_spk2utt(utt2spk: dict[str, str]) -> dict[str, str]:
    spk2utt: dict[str, list[str]] = defaultdict(list)
    for utt in sorted(utt2spk, key=sort_key):
        spk2utt[utt2spk[utt]].append(utt)
    return {spk: " ".join(utts) for spk, utts in spk2utt.items()}


def write_data_dir(
    out: str | Path,
    wav_scp: dict[str, str],
    text: dict[str, str],
    utt2spk: dict[str, str],
    spk2gender: dict[str, str] | None = None,
    spk2age: dict[str, str] | None = None,
) -> None:
    """Write the core tables of a data dir, sorted, with spk2utt derived from utt2spk, and
    the speaker tables given (restricted to the data's speakers)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / "wav.scp", wav_scp)
    write_table(out / "text", text)
    write_table(out / "utt2spk", utt2spk)
    write_table(out / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    spks = set(utt2spk.values())
    for name, table in (("spk2gender", spk2gender), ("spk2age", spk2age)):
        if table:
            write_table(out / name, {s: v for s, v in table.items() if s in spks})


def _check_sorted(path: Path, errors: list[str]) -> None:
    prev = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            key = line.split(maxsplit=1)[0] if line.strip() else ""
            if prev is not None and sort_key(key) <= sort_key(prev):
                errors.append(f"{path}:{n}: not sorted (or duplicate): '{key}' after '{prev}'")
                return
            prev = key


def validate_data_dir(
    data_dir: str | Path, check_audio: bool = True, allow_pipes: bool = False
) -> list[str]:
    """Kaldi's validate_data_dir.sh checks; returns one-line errors (empty list if valid)."""
    from asrkd.audio import AudioError, read_audio

    d = Path(data_dir)
    errors: list[str] = []
    for name in REQUIRED:
        if not (d / name).is_file():
            errors.append(f"{d / name}: missing required file")
    if errors:
        return errors
    tables: dict[str, dict[str, str]] = {}
    for name in (*REQUIRED, *UTT_TABLES[3:], *SPK_TABLES):
        if not (d / name).is_file():
            continue
        try:
            tables[name] = read_table(d / name, allow_empty_value=(name == "text"))
        except AsrkdError as e:
            errors.append(str(e))
            continue
        _check_sorted(d / name, errors)
    if errors:
        return errors
    if not tables["utt2spk"]:
        return [f"{d / 'utt2spk'}: no utterances (empty data dir)"]

    with open(d / "text", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if len(line.split()) < 2:
                errors.append(f"{d / 'text'}:{n}: empty transcript for utterance '{line.strip()}'")

    utts = set(tables["utt2spk"])
    for name in UTT_TABLES:
        if name in tables and set(tables[name]) != utts:
            extra = sorted(set(tables[name]) - utts, key=sort_key)
            missing = sorted(utts - set(tables[name]), key=sort_key)
            what = f"{len(missing)} missing (e.g. '{missing[0]}')" if missing else ""
            what += ", " if missing and extra else ""
            what += f"{len(extra)} not in utt2spk (e.g. '{extra[0]}')" if extra else ""
            errors.append(f"{d / name}: utterance set differs from utt2spk: {what}")

    spks = [sort_key(s) for s in tables["utt2spk"].values()]
    bad = next((u for (u, _), a, b in zip(tables["utt2spk"].items(), spks, spks[1:]) if b < a), None)
    if bad:  # Kaldi's check: sorted by utterance also sorted by speaker (speaker ids prefix utterance ids)
        errors.append(f"{d / 'utt2spk'}: not sorted by speaker when sorted by utterance (near '{bad}'): "
                      "make speaker ids prefixes of utterance ids")
    spk2utt = tables["spk2utt"]
    if spk2utt != utt2spk_to_spk2utt(tables["utt2spk"]):
        errors.append(f"{d / 'spk2utt'}: does not match utt2spk (regenerate it from utt2spk)")
    for name in SPK_TABLES:
        if name in tables and not set(spk2utt) <= set(tables[name]):
            missing = sorted(set(spk2utt) - set(tables[name]), key=sort_key)
            errors.append(f"{d / name}: {len(missing)} speakers missing (e.g. '{missing[0]}')")

    if check_audio and not errors:
        for n, (utt, spec) in enumerate(tables["wav.scp"].items(), 1):
            try:
                x, sr = read_audio(spec, allow_pipes=allow_pipes)
                if len(x) < 0.025 * sr:
                    raise AudioError(f"{len(x)} samples, shorter than one 25 ms frame")
            except AudioError as e:
                errors.append(f"{d / 'wav.scp'}:{n}: utterance '{utt}': {e}")
    return errors


def subset_data_dir(
    src: str | Path,
    dest: str | Path,
    first: int | None = None,
    per_spk: int | None = None,
    fraction: float | None = None,
    utt_list: list[str] | None = None,
    seed: int = 0,
    frame_fraction: float | None = None,
    force: bool = False,
) -> list[str]:
    """Kaldi's subset_data_dir.sh: keep the first N utts, N per speaker, a seeded fraction of
    the utterances or of the frames (whole utterances in seeded random order until that share
    of utt2num_frames), or an explicit list; writes `dest` whole with every known table
    filtered to the kept utts/speakers. Returns the kept utterances."""
    src = distinct_dirs(src, dest)
    ids = None if utt_list is None else hashlib.sha1(" ".join(sorted(utt_list)).encode()).hexdigest()
    out = Output(dest, "subset-data-dir", {"first": first, "per_spk": per_spk, "fraction": fraction,
                                           "utt_list": ids, "seed": seed, "frame_fraction": frame_fraction},
                 {"src": src})
    if out.done(force):
        return sorted(read_table(Path(dest) / "utt2spk"), key=sort_key)
    utt2spk = read_table(src / "utt2spk")
    utts = list(utt2spk)
    if sum(x is not None for x in (first, per_spk, fraction, utt_list, frame_fraction)) != 1:
        raise AsrkdError("subset: give exactly one of --first, --per-spk, --fraction, --frame-fraction, --utt-list")
    for f in (fraction, frame_fraction):
        if f is not None and not 0 < f <= 1:
            raise AsrkdError(f"subset: a fraction must be in (0, 1], got {f}")
    if first is not None:
        keep = utts[:first]
    elif per_spk is not None:
        by_spk: dict[str, list[str]] = defaultdict(list)
        for u in utts:
            by_spk[utt2spk[u]].append(u)
        keep = [u for us in by_spk.values() for u in us[:per_spk]]
    elif fraction is not None:
        keep = random.Random(seed).sample(utts, max(1, round(fraction * len(utts))))
    elif frame_fraction is not None:
        if not (src / "utt2num_frames").is_file():
            raise AsrkdError(f"{src}: --frame-fraction needs utt2num_frames (run compute-fbank)")
        frames = {u: int(n) for u, n in read_table(src / "utt2num_frames").items() if u in utt2spk}
        goal, total, keep = frame_fraction * sum(frames.values()), 0, []
        for u in random.Random(seed).sample(sorted(frames, key=sort_key), len(frames)):
            if total >= goal:
                break
            keep.append(u)
            total += frames[u]
        log.info("%s: %d utterances with %d frames, %.2f%% of the frames", dest, len(keep), total,
                 100 * total / sum(frames.values()))
    else:
        unknown = [u for u in utt_list if u not in utt2spk]
        if unknown:
            raise AsrkdError(f"subset: {len(unknown)} utterances not in {src} (e.g. '{unknown[0]}')")
        keep = utt_list
    with out.writing() as tmp:
        return filter_data_dir(src, tmp, set(keep))


def distinct_dirs(src: str | Path, dest: str | Path) -> Path:
    """`src` as a Path, after refusing a `dest` that is the same dir (symlinks resolved)."""
    src, dest = Path(src), Path(dest)
    if src.resolve() == dest.resolve():
        raise AsrkdError(f"{dest}: the destination is the source dir; give another destination")
    return src


def filter_data_dir(src: str | Path, dest: str | Path, keep: set[str], features: bool = True) -> list[str]:
    """Write `dest` with every table of `src` restricted to utterances in `keep`; returns them.
    `features=False` leaves out feats.scp and conf/ (a destination with features of its own)."""
    src, dest = Path(src), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    utt2spk = {u: s for u, s in read_table(src / "utt2spk").items() if u in keep}
    spks = set(utt2spk.values())
    for name in UTT_TABLES:
        if (src / name).is_file() and (features or name != "feats.scp"):
            t = read_table(src / name, allow_empty_value=(name == "text"))
            write_table(dest / name, {k: v for k, v in t.items() if k in utt2spk})
    for name in SPK_TABLES:
        if (src / name).is_file() and (name != "cmvn.scp" or src == dest):
            write_table(dest / name, {k: v for k, v in read_table(src / name).items() if k in spks})
    write_table(dest / "spk2utt", utt2spk_to_spk2utt(utt2spk))
    if src != dest and (src / "frame_shift").is_file():
        shutil.copy(src / "frame_shift", dest / "frame_shift")
    if features and src != dest and (src / "conf").is_dir():  # what the features are (fbank.yaml, fmllr.yaml)
        shutil.copytree(src / "conf", dest / "conf", dirs_exist_ok=True)
    if features and src != dest and (src / "cmvn.scp").is_file():
        log.warning("%s: cmvn.scp not copied: per-speaker stats must be recomputed for a subset", dest)
    return sorted(utt2spk, key=sort_key)


def fix_data_dir(data_dir: str | Path) -> int:
    """Kaldi's fix_data_dir.sh: keep only utterances present in every utterance table.

    Originals are kept in `<dir>/.backup/`. Returns the number of utterances removed.
    """
    d = Path(data_dir)
    present = [read_table(d / n, allow_empty_value=(n == "text")) for n in UTT_TABLES if (d / n).is_file()]
    all_utts = set(read_table(d / "utt2spk"))
    keep = set.intersection(*(set(t) for t in present))
    text = read_table(d / "text", allow_empty_value=True)
    keep = {u for u in keep if text.get(u, "").strip()}
    removed = len(all_utts - keep)
    if removed:
        backup = d / ".backup"
        backup.mkdir(exist_ok=True)
        for n in (*UTT_TABLES, *SPK_TABLES, "spk2utt"):
            if (d / n).is_file():
                shutil.copy(d / n, backup / n)
        filter_data_dir(d, d, keep)
        log.warning("%s: removed %d utterances not present in every table (backup in %s)", d, removed, backup)
    return removed


def combine_data_dirs(dest: str | Path, srcs: list[str | Path], force: bool = False) -> None:
    """Kaldi's combine_data.sh: union of data dirs, written whole into `dest`; utterance or
    speaker-table clashes are errors."""
    srcs = [distinct_dirs(src, dest) for src in srcs]
    out = Output(dest, "combine-data-dirs", {}, {f"src_{i}": s for i, s in enumerate(srcs)
                                                 if (Path(s) / "utt2spk").is_file()})
    if out.done(force):
        return
    merged: dict[str, dict[str, str]] = defaultdict(dict)
    for src in srcs:
        if not (src / "utt2spk").is_file():
            raise AsrkdError(f"{src}: not a data dir (no utt2spk)")
        for name in (*UTT_TABLES, *SPK_INFO):
            if not (src / name).is_file():
                if name in merged and name in REQUIRED:
                    raise AsrkdError(f"{src / name}: missing, but present in other dirs")
                continue
            for k, v in read_table(src / name, allow_empty_value=(name == "text")).items():
                if k in merged[name] and (name in UTT_TABLES or merged[name][k] != v):
                    raise AsrkdError(f"{src / name}: key '{k}' also in another source dir")
                merged[name][k] = v
    with out.writing() as tmp:
        for name, table in merged.items():
            write_table(tmp / name, table)
        write_table(tmp / "spk2utt", utt2spk_to_spk2utt(merged["utt2spk"]))
    log.info("combined %d dirs into %s: %d utterances", len(srcs), dest, len(merged["utt2spk"]))

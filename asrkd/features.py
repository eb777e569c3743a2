"""Log-mel filterbank features (kaldi-native-fbank), per-speaker CMVN and context splicing.

Features are written as Kaldi `ark,scp` via kaldiio, so `copy-feats scp:feats.scp ark,t:-`
reads them. Samples are scaled to the 16-bit range before analysis, as in Kaldi.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import kaldi_native_fbank as knf
import kaldiio
import numpy as np
import yaml

from asrkd.audio import AudioError, read_audio, resample
from asrkd.data import read_table, sort_key, write_table
from asrkd.jobs import JobConfig, run_jobs
from asrkd.utils import AsrkdError, atomic_file, new_ark, write_list

log = logging.getLogger(__name__)


@dataclass
class FbankConfig:
    """Kaldi `compute-fbank-feats` options (Kaldi's defaults unless noted)."""

    sample_frequency: int = 16000
    num_mel_bins: int = 40  # Kaldi default 23; the paper uses 40
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 1.0  # Gaussian noise std in 16-bit units, seeded per utterance
    preemph_coeff: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0 means offset from Nyquist
    snip_edges: bool = True
    energy_floor: float = 0.0
    seed: int = 0
    channel: int | None = None  # None: average channels
    allow_upsample: bool = False  # audio below sample_frequency: skipped (an empty upper band) unless true

    def knf_options(self) -> knf.FbankOptions:
        o = knf.FbankOptions()
        fo, mo = o.frame_opts, o.mel_opts
        fo.samp_freq = float(self.sample_frequency)
        fo.frame_length_ms = self.frame_length_ms
        fo.frame_shift_ms = self.frame_shift_ms
        fo.dither = 0.0  # applied by us with a seeded generator, see compute_fbank
        fo.preemph_coeff = self.preemph_coeff
        fo.remove_dc_offset = self.remove_dc_offset
        fo.window_type = self.window_type
        fo.snip_edges = self.snip_edges
        mo.num_bins = self.num_mel_bins
        mo.low_freq = self.low_freq
        mo.high_freq = self.high_freq
        o.energy_floor = self.energy_floor
        o.use_energy = False
        o.use_log_fbank = True
        o.use_power = True
        return o


def compute_fbank(samples: np.ndarray, cfg: FbankConfig, utt_id: str = "") -> np.ndarray:
    """[T, num_mel_bins] log-mel energies of mono float samples in [-1, 1] at cfg's rate.

    Dither noise is drawn from a generator seeded by (cfg.seed, utt_id), so results repeat.
    """
    x = samples.astype(np.float32) * 32768.0
    if cfg.dither > 0:
        rng = np.random.default_rng([cfg.seed, zlib.crc32(utt_id.encode())])
        x = x + cfg.dither * rng.standard_normal(len(x)).astype(np.float32)
    fb = knf.OnlineFbank(cfg.knf_options())
    fb.accept_waveform(float(cfg.sample_frequency), x)
    fb.input_finished()
    n = fb.num_frames_ready
    feats = np.empty((n, cfg.num_mel_bins), dtype=np.float32)
    for t in range(n):
        feats[t] = fb.get_frame(t)
    return feats


def _fbank_job(job: int, items: list[tuple[str, str]], cfg: FbankConfig, out_dir: Path, allow_pipes: bool):
    """Write `raw_fbank.<job>.{ark,len,skipped}`, then `.scp`, which marks the job complete."""
    stem = out_dir / f"raw_fbank.{job}"
    skipped, lengths, resampled = [], [], 0
    with open(f"{stem}.ark", "wb") as fa, atomic_file(f"{stem}.scp") as fs:
        for utt, spec in items:
            try:
                x, sr = read_audio(spec, channel=cfg.channel, allow_pipes=allow_pipes)
                if sr < cfg.sample_frequency and not cfg.allow_upsample:
                    raise AudioError(f"{sr} Hz audio, the fbank config's sample_frequency is {cfg.sample_frequency}: "
                                     "upsampling leaves the upper mel bins on an empty band; set sample_frequency "
                                     f"to {sr} (or allow_upsample: true)")
                if sr != cfg.sample_frequency:
                    x, resampled = resample(x, sr, cfg.sample_frequency), resampled + 1
                feats = compute_fbank(x, cfg, utt)
                if feats.shape[0] == 0:
                    raise AudioError(f"too short for one frame ({len(x)} samples)")
            except AudioError as e:
                skipped.append(f"{utt} {e}")
                continue
            lengths.append(f"{utt} {feats.shape[0]} {len(x) / cfg.sample_frequency:.3f}")
            kaldiio.save_ark(fa, {utt: feats}, scp=fs)
        write_list(f"{stem}.len", lengths)
        write_list(f"{stem}.skipped", skipped)
    return resampled


def _fbank_up_to_date(d: Path, conf: Path, cfg: FbankConfig, force: bool) -> bool:
    """Whether `d`'s feats.scp stands (computed with `cfg`, no `force`); feats.scp computed
    with other options is an error unless forced."""
    same_cfg = conf.is_file() and yaml.safe_load(conf.read_text()) == asdict(cfg)
    if not (d / "feats.scp").is_file() or force:
        return False
    if not same_cfg:
        raise AsrkdError(f"{d}: feats.scp was computed with other options than these ({conf}); "
                         "use --force to recompute")
    log.info("%s: feats.scp exists, skipping (use --force to recompute)", d)
    return True


def _fbank_ark_dir(d: Path, cfg: FbankConfig, items: list, nj: int, allow_pipes: bool) -> tuple[str, Path]:
    """(run key, `<dir>/data/fbank_<run>/`) of this run's arks, created: the same dir for a
    rerun with the same options, never the one feats.scp still uses."""
    run = hashlib.sha1(repr((asdict(cfg), items, nj, allow_pipes)).encode()).hexdigest()[:10]
    out_dir = d / "data" / f"fbank_{run}"  # a rerun after a kill finds the same dir ...
    if (d / "feats.scp").is_file() and f"{out_dir}/" in (d / "feats.scp").read_text():
        out_dir = out_dir.with_name(out_dir.name + ".1")  # ... but never the one feats.scp still uses
    out_dir.mkdir(parents=True, exist_ok=True)
    return run, out_dir


def _fbank_jobs_todo(d: Path, out_dir: Path, chunks: list[list]) -> list[int]:
    """The (1-based) jobs still to run: those whose scp, len and skipped lists do not
    already cover their split of the utterances."""
    todo = []
    for j, chunk in enumerate(chunks, 1):
        stem = out_dir / f"raw_fbank.{j}"
        if Path(f"{stem}.scp").is_file():
            done = [line.split()[0] for name in ("len", "skipped") for line in open(f"{stem}.{name}")]
            if set(done) == {u for u, _ in chunk}:
                log.info("%s: job %d already finished, reusing it", d, j)
                continue
        todo.append(j)
    return todo


def _gather_fbank_jobs(out_dir: Path, nj: int) -> tuple[dict, dict, dict, list]:
    """feats.scp, utt2num_frames and utt2dur entries, and the skipped lines, of all `nj` jobs."""
    feats_scp, num_frames, durs, skipped = {}, {}, {}, []
    for j in range(1, nj + 1):
        stem = out_dir / f"raw_fbank.{j}"
        feats_scp.update(read_table(f"{stem}.scp", allow_empty_value=True))
        for line in open(f"{stem}.len"):
            utt, n, dur = line.split()
            num_frames[utt], durs[utt] = n, dur
        skipped += [line.rstrip("\n") for line in open(f"{stem}.skipped")]
    return feats_scp, num_frames, durs, skipped


def _report_skipped(d: Path, skipped: list, feats_scp: dict, num_utts: int, max_skipped: float) -> None:
    """Sort and list the skipped utterances in `<dir>/log/fbank_skipped.txt`; none left with
    features, or more than `max_skipped` of `num_utts` skipped, is an error."""
    skipped.sort(key=sort_key)
    write_list(d / "log" / "fbank_skipped.txt", skipped)
    if skipped:
        log.warning("%s: skipped %d of %d utterances (listed in %s; they keep no features)", d, len(skipped),
                    num_utts, d / "log" / "fbank_skipped.txt")
        if not feats_scp or len(skipped) > max_skipped * num_utts:
            raise AsrkdError(f"{d}: {len(skipped)} of {num_utts} utterances have no features (more than "
                             f"{max_skipped:.0%}), first: {skipped[0]}; see {d / 'log' / 'fbank_skipped.txt'}")


def _write_fbank_tables(d: Path, conf: Path, cfg: FbankConfig, out_dir: Path, feats_scp: dict, num_frames: dict,
                        durs: dict) -> None:
    """utt2num_frames, utt2dur, conf/fbank.yaml, then feats.scp (switching to the new arks),
    then remove the superseded arks."""
    write_table(d / "utt2num_frames", num_frames)
    write_table(d / "utt2dur", durs)
    with atomic_file(conf) as f:
        yaml.safe_dump(asdict(cfg), f, sort_keys=False)
    write_table(d / "feats.scp", feats_scp)  # written last: switches to the new features
    for stale in (d / "data").glob("*fbank*"):  # superseded features (and a pre-run-dir layout)
        if stale != out_dir:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def compute_fbank_dir(
    data_dir: str | Path,
    cfg: FbankConfig,
    nj: int = 1,
    allow_pipes: bool = False,
    force: bool = False,
    max_skipped: float = 0.05,
    jobs: JobConfig | None = None,
) -> dict:
    """Compute features for every utterance of a data dir in `nj` jobs (local processes, or
    Slurm jobs with `jobs`).

    Writes `feats.scp`, `utt2num_frames`, `utt2dur` and `conf/fbank.yaml`; arks go to a new
    `<dir>/data/fbank_<run>/` and replace the old ones only when feats.scp is written (last),
    so a killed run leaves the previous features intact and its finished jobs are reused
    by the next run with the same options. Unreadable or empty audio is skipped and listed in
    `<dir>/log/fbank_skipped.txt`; the skipped utterances stay in the user's tables (Kaldi's
    fix_data_dir is an explicit step) but have no features. No usable utterance, or more than
    `max_skipped` of them skipped (Kaldi's make_fbank: 5%), is an error. Returns a summary.
    """
    d = Path(data_dir).resolve()
    wav = read_table(d / "wav.scp")  # before anything is created
    conf = d / "conf" / "fbank.yaml"
    if _fbank_up_to_date(d, conf, cfg, force):
        return {"skipped_stage": True}
    items = list(wav.items())
    nj = max(1, min(nj, len(items)))
    run, out_dir = _fbank_ark_dir(d, cfg, items, nj, allow_pipes)
    chunks = [items[j::nj] for j in range(nj)]
    t0 = time.time()
    todo = _fbank_jobs_todo(d, out_dir, chunks)
    resampled = sum(run_jobs(_fbank_job, [(j, chunks[j - 1], cfg, out_dir, allow_pipes) for j in todo], "fbank",
                             d / "log", jobs, parallel=nj, key=run))
    feats_scp, num_frames, durs, skipped = _gather_fbank_jobs(out_dir, nj)
    elapsed = time.time() - t0
    _report_skipped(d, skipped, feats_scp, len(items), max_skipped)
    if resampled:
        (log.warning if cfg.allow_upsample else log.info)(
            "%s: resampled %d utterances to %d Hz%s", d, resampled, cfg.sample_frequency,
            " (allow_upsample: where the audio's rate was lower, the upper mel bins lie on an empty band)"
            if cfg.allow_upsample else "")
    _write_fbank_tables(d, conf, cfg, out_dir, feats_scp, num_frames, durs)
    frames = sum(int(v) for v in num_frames.values())
    log.info("%s: %d utterances, %d frames in %.1f s with %d jobs (%.0f frames/s)",
             d, len(feats_scp), frames, elapsed, nj, frames / max(elapsed, 1e-9))
    return {"utterances": len(feats_scp), "frames": frames, "skipped": len(skipped),
            "resampled": resampled, "seconds": elapsed, "nj": nj}


def _cmvn_job(data_dir: Path, spk2utt: dict) -> dict:
    """One job: the CMVN stats of the speakers in `spk2utt` (a split of the data dir)."""
    raw = FeatureReader(data_dir, cmvn=False)
    stats = {}
    for spk, utts in spk2utt.items():
        acc = None
        for utt in utts.split():
            if utt not in raw.feats:
                continue  # skipped by compute-fbank (listed in log/fbank_skipped.txt)
            s = knf.compute_cmvn_stats(raw[utt])  # checked: readable and finite
            acc = s if acc is None else acc + s
        if acc is not None:
            stats[spk] = acc
    return stats


def compute_cmvn_stats_dir(data_dir: str | Path, force: bool = False, nj: int = 1,
                           jobs: JobConfig | None = None) -> None:
    """Per-speaker CMVN statistics in Kaldi's 2 x (D+1) layout: `cmvn.scp` -> `data/cmvn.<tag>.ark`
    (a new ark each time; cmvn.scp switches to it last); recomputed when feats.scp is newer
    than cmvn.scp. Utterances without features are left out; unreadable or non-finite features
    are a one-line error naming the utterance. The speakers are split into `nj` jobs."""
    d = Path(data_dir).resolve()
    cmvn = d / "cmvn.scp"
    if cmvn.is_file() and not force and cmvn.stat().st_mtime_ns >= (d / "feats.scp").stat().st_mtime_ns:
        log.info("%s: cmvn.scp exists, skipping", d)
        return
    spk2utt = list(read_table(d / "spk2utt").items())
    nj = max(1, min(nj, len(spk2utt)))
    key = hashlib.sha1(repr((spk2utt, (d / "feats.scp").read_bytes())).encode()).hexdigest()[:12]
    stats = {}
    for part in run_jobs(_cmvn_job, [(d, dict(spk2utt[j::nj])) for j in range(nj)], "cmvn", d / "log", jobs,
                         parallel=nj, key=key):
        stats |= part
    with new_ark(d / "data" / "cmvn") as ark:
        with open(ark, "wb") as fa, atomic_file(d / "cmvn.scp") as fs:
            for spk in sorted(stats, key=sort_key):
                kaldiio.save_ark(fa, {spk: stats[spk]}, scp=fs)
    log.info("%s: CMVN stats for %d speakers", d, len(stats))


def apply_cmvn(feats: np.ndarray, stats: np.ndarray, norm_vars: bool = False) -> np.ndarray:
    """Kaldi apply-cmvn: subtract the speaker mean (and divide by its std if norm_vars)."""
    count = stats[0, -1]
    if count <= 0:
        raise AsrkdError("CMVN stats have zero count")
    mean = stats[0, :-1] / count
    out = feats - mean
    if norm_vars:
        var = np.maximum(stats[1, :-1] / count - mean**2, 1e-10)
        out = out / np.sqrt(var)
    return out.astype(np.float32)


def splice(feats: np.ndarray, left: int, right: int) -> np.ndarray:
    """Kaldi splice-feats: [T, D] -> [T, D*(left+1+right)], edge frames repeated."""
    if left == 0 and right == 0:
        return feats
    return knf.splice_frames(np.ascontiguousarray(feats, dtype=np.float32),
                             knf.SpliceOptions(left_context=left, right_context=right))


def feature_kind(data_dir: str | Path) -> str | None:
    """What a data dir's features are, as a model trained on them records it: "fbank"
    (`conf/fbank.yaml`), "fmllr <GMM id>" (`conf/fmllr.yaml`, make-fmllr-feats), or None
    where neither file says (features made outside asrkd)."""
    conf = Path(data_dir) / "conf"
    if (conf / "fmllr.yaml").is_file():
        return f"fmllr {yaml.safe_load((conf / 'fmllr.yaml').read_text())['model_id']}"
    return "fbank" if (conf / "fbank.yaml").is_file() else None


def check_feature_kind(data_dir: str | Path, kind: str | None, model: str | Path) -> None:
    """A one-line error when the features of `data_dir` are not the `kind` that `model` reads
    (GMMs: fbank; a network: what it was trained on, where it recorded that)."""
    have = feature_kind(data_dir)
    if kind and have and have != kind:
        raise AsrkdError(f"{data_dir}: {kind_text(have)}, but {model} reads {kind_text(kind)}")


def kind_text(kind: str) -> str:
    """A `feature_kind` in words, for error messages."""
    return "fbank features" if kind == "fbank" else f"fMLLR features (of the GMM whose record id is {kind.split()[1]})"


class FeatureReader:
    """Random access to a data dir's features with CMVN (per speaker) and splicing applied."""

    def __init__(self, data_dir: str | Path, cmvn: bool = True, norm_vars: bool = False,
                 left_context: int = 0, right_context: int = 0):
        d = self.path = Path(data_dir)
        self.feats = read_table(d / "feats.scp")
        self.utt2spk = read_table(d / "utt2spk")
        self.cmvn = {}
        if cmvn:
            if not (d / "cmvn.scp").is_file():
                raise AsrkdError(f"{d / 'cmvn.scp'}: missing (run compute-cmvn-stats or pass cmvn=False)")
            self.cmvn = {s: kaldiio.load_mat(r) for s, r in read_table(d / "cmvn.scp").items()}
        self.norm_vars, self.left, self.right = norm_vars, left_context, right_context

    def __len__(self) -> int:
        return len(self.feats)

    def keys(self) -> list[str]:
        return list(self.feats)

    def __getitem__(self, utt: str) -> np.ndarray:
        try:
            x = kaldiio.load_mat(self.feats[utt])
        except Exception as e:
            raise AsrkdError(f"{self.path / 'feats.scp'}: utterance '{utt}': cannot read {self.feats[utt]} "
                             f"({type(e).__name__}: {e})") from None
        if not np.isfinite(x).all():
            raise AsrkdError(f"{self.path / 'feats.scp'}: utterance '{utt}' has non-finite features "
                             f"({int((~np.isfinite(x)).any(1).sum())} frames)")
        if self.cmvn:
            x = apply_cmvn(x, self.cmvn[self.utt2spk[utt]], self.norm_vars)
        return splice(x, self.left, self.right)

    def __iter__(self):
        for utt in self.feats:
            yield utt, self[utt]

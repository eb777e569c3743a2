"""The features a GMM system sees, written as a data dir for the networks (Kaldi's
steps/nnet/make_fmllr_feats.sh): the CMVN'd fbank of a data dir through the system's
features (LDA+MLLT of spliced cepstra, or cepstra with deltas) and, with a transform dir,
each speaker's fMLLR transform. Training data take the transforms of their alignment dir,
tuning and test data those of the first decoding pass (`decode-fmllr`'s `<dir>.fmllr`),
never of an alignment to their reference.

The new data dir holds the source's tables (utterances without features left out), its own
`feats.scp` (arks under `<out>/data/`, written last), `conf/fmllr.yaml` (the GMM, which
networks trained on the features record) and no `cmvn.scp`: compute it next.
Utterances of a speaker without a transform are skipped and listed in `log/fmllr_skipped.txt`.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import kaldiio
import yaml

from asrkd.data import distinct_dirs, filter_data_dir, read_table, read_utt2spk, sort_key, write_table
from asrkd.features import FeatureReader
from asrkd.hmm.align import model_features, split_by_speaker
from asrkd.hmm.fmllr import TRANSFORMS, SpeakerTransforms
from asrkd.jobs import JobConfig, run_jobs, split_key
from asrkd.outputs import Output
from asrkd.utils import AsrkdError, atomic_file, write_list

log = logging.getLogger(__name__)


def _feats_job(data_dir: Path, model_dir: Path, transforms: Path | None, utts: list[str], ark: Path) -> dict:
    """Write the features of `utts` to `ark`: (scp entries, skipped lines)."""
    reader = FeatureReader(data_dir, cmvn=True)
    features = model_features(model_dir)
    utt2spk = read_utt2spk(data_dir, utts)
    adapt = SpeakerTransforms.read(transforms, utt2spk) if transforms else None
    skipped, lines = [], io.StringIO()
    with open(ark, "wb") as f:
        for utt in utts:
            if adapt and utt2spk[utt] not in adapt.transforms:
                skipped.append(f"{utt} no fMLLR transform for speaker {utt2spk[utt]}")
                continue
            x = features(reader[utt])
            kaldiio.save_ark(f, {utt: adapt(utt, x) if adapt else x}, scp=lines)
    scp = dict(line.split(" ", 1) for line in lines.getvalue().splitlines())
    return {"scp": scp, "skipped": skipped}


def make_fmllr_feats(data_dir: str | Path, model_dir: str | Path, out_dir: str | Path,
                     transform_dir: str | Path | None = None, nj: int = 1, jobs: JobConfig | None = None,
                     force: bool = False, max_skipped: float = 0.05) -> dict:
    """Write `out_dir`, a data dir of `data_dir`'s features as GMM system `model_dir` sees
    them, fMLLR-adapted by the `trans.ark` of `transform_dir` where given; in `nj` jobs of
    whole speakers. More than `max_skipped` of the utterances skipped is an error."""
    src, out_dir, model_dir = distinct_dirs(data_dir, out_dir), Path(out_dir), Path(model_dir)
    transforms = None
    if transform_dir is not None:
        transforms = Path(transform_dir) / TRANSFORMS
        if not transforms.is_file():
            raise AsrkdError(f"{transforms}: missing (an alignment or decode-fmllr dir of a SAT system holds one)")
    out = Output(out_dir, "make-fmllr-feats", {}, {"data": src / "feats.scp", "cmvn": src / "cmvn.scp",
                                                   "model": model_dir, "transforms": transforms})
    if out.done(force):
        return {"skipped_stage": True}
    keys = sorted(read_table(src / "feats.scp"), key=sort_key)
    parts = split_by_speaker(keys, read_utt2spk(src, keys), max(1, nj))
    out.start()
    (out_dir / "data").mkdir(exist_ok=True)
    key = split_key(out.key(), parts)
    arks = [(out_dir / "data" / f"feats.{key}.{j + 1}.ark").resolve() for j in range(len(parts))]
    res = run_jobs(_feats_job, [(src, model_dir, transforms, p, a) for p, a in zip(parts, arks)],
                   "make_fmllr_feats", out_dir / "log", jobs, parallel=len(parts), key=key)
    scp = {u: e for r in res for u, e in r["scp"].items()}
    skipped = sorted((s for r in res for s in r["skipped"]), key=lambda s: sort_key(s.split()[0]))
    write_list(out_dir / "log" / "fmllr_skipped.txt", skipped)
    if skipped:
        log.warning("%s: skipped %d of %d utterances (listed in %s)", out_dir, len(skipped), len(keys),
                    out_dir / "log" / "fmllr_skipped.txt")
        if len(skipped) > max_skipped * len(keys):
            raise AsrkdError(f"{out_dir}: {len(skipped)} of {len(keys)} utterances have no fMLLR transform (more "
                             f"than {max_skipped:.0%}), first: {skipped[0]}")
    for stale in (out_dir / "data").glob("feats.*.ark"):  # of a killed run with another --nj
        if stale.resolve() not in arks:
            stale.unlink()
    (out_dir / "conf").mkdir(exist_ok=True)
    with atomic_file(out_dir / "conf" / "fmllr.yaml") as f:  # what the features are: models record it
        yaml.safe_dump({"model": str(model_dir), "model_id": out.inputs["model"], "transform_dir":
                        str(transform_dir) if transforms else None}, f, sort_keys=False)
    filter_data_dir(src, out_dir, set(scp), features=False)  # the source's other tables
    write_table(out_dir / "feats.scp", dict(sorted(scp.items(), key=lambda kv: sort_key(kv[0]))))  # last
    out.finish()
    log.info("%s: %d utterances, features of %s%s", out_dir, len(scp), model_dir,
             f" with the fMLLR transforms of {transform_dir}" if transforms else "")
    return {"utterances": len(scp), "skipped": len(skipped)}

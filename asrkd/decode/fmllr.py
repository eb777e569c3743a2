"""Two-pass decoding of a speaker-adapted (SAT) GMM system (Kaldi decode_fmllr.sh).

Pass 1 decodes `<decode_dir>.si` with the speaker-independent `final.alimdl` on the
unadapted features. Each speaker's fMLLR transform of `final.pt` is then estimated from the
best paths of that pass at its chosen LM weight and penalty, silence frames weighted 0.01
and the component posteriors of `final.alimdl` (Kaldi uses the first pass's lattice
posteriors; asrkd its best path), into
`<decode_dir>.fmllr/trans.ark`. Pass 2 decodes `<decode_dir>` with `final.pt` on the adapted
features, choosing its own LM weight and penalty (or those of `tuned_on`). Kaldi's
decode_fmllr.sh goes on to re-estimate the transforms from the second pass and rescore its
lattices; asrkd stops after the second pass.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from asrkd.data import read_table, read_utt2spk, sort_key
from asrkd.decode.decoder import MAX_ACTIVE, GmmScorer, check_graph, decode, search_graph, tuned_weights
from asrkd.hmm.align import best_path, load_model, speech_pdfs, split_by_speaker
from asrkd.hmm.fmllr import SpeakerTransforms, identity, speaker_fmllr
from asrkd.jobs import JobConfig, run_jobs, split_key
from asrkd.outputs import Output
from asrkd.utils import AsrkdError, write_list

log = logging.getLogger(__name__)


def check_silence(graph_dir: Path) -> None:
    """The graph dir must name the silence phones (phones/silence.int), for the silence weight."""
    path = graph_dir / "phones" / "silence.int"
    if not path.is_file():
        raise AsrkdError(f"{path}: missing (a graph from an older asrkd: make it again with `asrkd make-graph "
                         "--force`)")


def _fmllr_job(graph_dir: Path, model_dir: Path, data_dir: Path, utts: list[str], weights: tuple[float, float],
               beam: float, max_active: int, silence_weight: float) -> dict:
    """One job (whole speakers): the pass-1 best path of each utterance and the speakers' transforms."""
    scorer = GmmScorer(model_dir, data_dir, si=True)
    gmm, tree = load_model(model_dir)
    check_silence(graph_dir)
    pdf_weight = np.where(speech_pdfs(tree, graph_dir), 1.0, silence_weight)
    graph = search_graph(str(graph_dir / "HCLG.fst"), weights[1], False, scorer.num_pdfs)
    feats, ali, failed = {}, {}, []
    for utt in utts:
        feats[utt] = scorer.feats(utt)
        res = best_path(graph, scorer.gmm.loglik(feats[utt]) / weights[0], beam, max_active)
        if res is None or len(res[1]) != len(feats[utt]):
            failed.append(utt)
            continue
        ali[utt] = np.asarray(res[1], dtype=np.int64) - 1
    transforms, _ = speaker_fmllr(gmm, feats, ali, pdf_weight, read_utt2spk(data_dir, utts), scorer.gmm)
    return {"transforms": transforms, "failed": failed}


def estimate_fmllr(graph_dir: str | Path, model_dir: str | Path, data_dir: str | Path, si_decode_dir: str | Path,
                   out_dir: str | Path, beam: float = 13.0, max_active: int = MAX_ACTIVE, silence_weight: float = 0.01,
                   nj: int = 1, jobs: JobConfig | None = None, force: bool = False) -> Path:
    """Each speaker's fMLLR transform of a SAT model from the best paths of its first pass
    (`si_decode_dir`, at the LM weight and penalty chosen there) into `out_dir/trans.ark`;
    speakers none of whose utterances has a path keep the identity."""
    graph_dir, model_dir, data_dir, out_dir = map(Path, (graph_dir, model_dir, data_dir, out_dir))
    if not 0 <= silence_weight <= 1:
        raise AsrkdError(f"--silence-weight {silence_weight}: must be between 0 and 1")
    out = Output(out_dir, "est-fmllr", {"beam": beam, "max_active": max_active, "silence_weight": silence_weight},
                 {"graph": graph_dir, "model": model_dir, "data": data_dir, "si_decode": si_decode_dir})
    if out.done(force):
        return out_dir
    (lmwt,), (wip,) = tuned_weights(si_decode_dir)
    keys = sorted(read_table(data_dir / "feats.scp"), key=sort_key)
    utt2spk = read_utt2spk(data_dir, keys)
    parts = split_by_speaker(keys, utt2spk, max(1, nj))
    out.start()
    res = run_jobs(_fmllr_job, [(graph_dir, model_dir, data_dir, p, (lmwt, wip), beam, max_active, silence_weight)
                                for p in parts], "est-fmllr", out_dir / "log", jobs, parallel=len(parts),
                   key=split_key(out.key(), parts))
    transforms = {s: w for r in res for s, w in r["transforms"].items()}
    dim = load_model(model_dir)[0].dim
    for spk in {utt2spk[u] for u in keys} - set(transforms):
        transforms[spk] = identity(dim)
    failed = sorted((u for r in res for u in r["failed"]), key=sort_key)
    write_list(out_dir / "log" / "no_path.txt", failed)
    if failed:
        log.warning("%s: %d utterances without a first-pass path, listed in log/no_path.txt", out_dir, len(failed))
    SpeakerTransforms(transforms, utt2spk).write(out_dir)
    out.finish()
    return out_dir


def decode_fmllr(graph_dir: str | Path, model_dir: str | Path, data_dir: str | Path, decode_dir: str | Path,
                 tuned_on: str | Path | None = None, silence_weight: float = 0.01, nj: int = 1,
                 jobs: JobConfig | None = None, force: bool = False, **search) -> dict:
    """Kaldi decode_fmllr.sh: pass 1 into `<decode_dir>.si`, the speakers' transforms into
    `<decode_dir>.fmllr`, pass 2 into `decode_dir` (`search`: the options of `decode`);
    returns pass 2's decode_info."""
    graph_dir, decode_dir = Path(graph_dir), Path(decode_dir)
    si_dir, fmllr_dir = (decode_dir.with_name(decode_dir.name + s) for s in (".si", ".fmllr"))
    si_scorer = GmmScorer(model_dir, data_dir, si=True)
    check_graph(graph_dir, si_scorer)
    check_silence(graph_dir)  # the errors of what pass 2 needs, before pass 1
    read_utt2spk(data_dir, si_scorer.keys())
    si_tuned = None if tuned_on is None else Path(str(tuned_on) + ".si")
    decode(graph_dir, si_scorer, data_dir, si_dir, tuned_on=si_tuned, nj=nj, jobs=jobs, force=force, **search)
    estimate_fmllr(graph_dir, model_dir, data_dir, si_dir, fmllr_dir, beam=search.get("beam", 13.0),
                   max_active=search.get("max_active", MAX_ACTIVE), silence_weight=silence_weight, nj=nj, jobs=jobs,
                   force=force)
    return decode(graph_dir, GmmScorer(model_dir, data_dir, transforms=fmllr_dir), data_dir, decode_dir,
                  tuned_on=tuned_on, nj=nj, jobs=jobs, force=force, **search)

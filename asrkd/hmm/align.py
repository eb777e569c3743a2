"""Viterbi forced alignment of a GMM-HMM system (Kaldi align_si.sh): senone per frame.

GMMs see MFCC-like features: the DCT of the CMVN-normalised log-mel frames (13 cepstra,
liftered) with deltas and delta-deltas, because diagonal Gaussians need decorrelated
dimensions; or, for a system with a `final.mat` (LDA+MLLT, `asrkd.hmm.transform`), the
cepstra spliced and projected. Senone targets are per frame of the original fbank features (same frames).
The alignment dir it writes is owned by `asrkd.hmm.alignment.AlignmentDir`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import kaldi_decoder
import kaldi_native_fbank as knf
import kaldifst
import numpy as np

from asrkd.checkpoint import load_checkpoint, save_checkpoint
from asrkd.data import read_table, read_utt2spk, sort_key
from asrkd.environment import environment
from asrkd.features import FeatureReader, check_feature_kind
from asrkd.hmm.alignment import AlignmentDir
from asrkd.hmm.fmllr import SpeakerTransforms, speaker_fmllr
from asrkd.hmm.gmm import DiagGmmSet
from asrkd.hmm.graphs import compile_graph, transcript_phone_fst
from asrkd.hmm.transform import MATRIX, FeatureTransform
from asrkd.hmm.tree import ContextTree
from asrkd.jobs import JobConfig, run_jobs, split_key
from asrkd.lang import UNK, read_symbols
from asrkd.outputs import Output
from asrkd.topo import TopologyEntry, read_topo
from asrkd.utils import AsrkdError

log = logging.getLogger(__name__)
ALIMDL = "final.alimdl"  # a SAT system's speaker-independent GMMs, for its first pass (Kaldi's final.alimdl)


@functools.lru_cache(maxsize=8)
def dct_lifter(n: int, num_ceps: int, lifter: float) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal DCT-II matrix [num_ceps, n] and Kaldi's cepstral lifter, from Python's
    scalar cos and sin (numpy's vectorised ones differ between its SIMD paths)."""
    dct = np.array([[math.sqrt((1.0 if k else 0.5) * 2.0 / n) * math.cos(math.pi / n * (j + 0.5) * k)
                     for j in range(n)] for k in range(num_ceps)])
    return dct, np.array([1.0 + 0.5 * lifter * math.sin(math.pi * k / lifter) for k in range(num_ceps)])


def cepstra(fbank: np.ndarray, num_ceps: int = 13, lifter: float = 22.0) -> np.ndarray:
    """Cepstra: the orthonormal DCT-II of log-mels, with Kaldi's liftering (float32)."""
    dct, lift = dct_lifter(fbank.shape[1], num_ceps, lifter)
    ceps = np.zeros((len(fbank), num_ceps))
    for j in range(fbank.shape[1]):  # the DCT summed in a fixed order, not a BLAS product (bit-reproducible)
        ceps += fbank[:, j, None].astype(np.float64) * dct[:, j]
    return np.ascontiguousarray((ceps * lift).astype(np.float32))


def gmm_features(fbank: np.ndarray, transform: FeatureTransform | None = None) -> np.ndarray:
    """A GMM system's features: cepstra + deltas + delta-deltas, or the cepstra spliced and
    projected by the system's `transform` (LDA+MLLT)."""
    ceps = cepstra(fbank)
    return transform(ceps) if transform else knf.compute_deltas(knf.DeltaOptions(), ceps)


@dataclass
class Corpus:
    """Features and transcripts of a data dir, held in memory for GMM training."""

    utts: list[str]
    feats: dict[str, np.ndarray]
    words: dict[str, list[int]]
    skipped: list[str] = field(default_factory=list)
    oov_words: int = 0


def load_corpus(data_dir: str | Path, lang_dir: str | Path, utts: list[str] | None = None,
                features=gmm_features) -> Corpus:
    """CMVN'd fbank -> GMM features (`features` of the fbank matrix); transcript words as ids
    (OOVs -> <UNK>, counted). Only `utts` (one job's split), if given."""
    check_feature_kind(data_dir, "fbank", "a GMM system")
    reader = FeatureReader(data_dir, cmvn=True)
    words = read_symbols(Path(lang_dir) / "words.txt")
    text = read_table(Path(data_dir) / "text", allow_empty_value=True)
    feats, ids, skipped, oov = {}, {}, [], 0
    for utt in reader.keys() if utts is None else utts:
        toks = text.get(utt, "").split()
        if not toks:
            skipped.append(f"{utt} empty transcript")
            continue
        ids[utt] = [words.get(w, words[UNK]) for w in toks]
        oov += sum(w not in words for w in toks)
        feats[utt] = features(reader[utt])
    if oov:
        log.warning("%s: %d transcript words are not in %s/words.txt: aligned as %s", data_dir, oov, lang_dir, UNK)
    return Corpus(sorted(feats, key=sort_key), feats, ids, skipped, oov)


def compile_training_graphs(corpus: Corpus, lang_dir: Path, tree: ContextTree,
                            topo: list[TopologyEntry]) -> dict:
    """One H∘C∘L∘transcript graph per utterance (ilabels: senone + 1)."""
    L = kaldifst.StdVectorFst.read(str(Path(lang_dir) / "L.fst"))
    return {utt: compile_graph(transcript_phone_fst(L, corpus.words[utt]), tree, topo) for utt in corpus.utts}


def best_path(graph: kaldifst.StdVectorFst, scores: np.ndarray, beam: float, max_active: int = 2**31 - 1,
              min_active: int = 20):
    """kaldi-decoder's FasterDecoder over `graph` for [T, num_pdfs] already-scaled scores:
    (reached a final state, ilabels, olabels, cost) of the best path, or None."""
    opts = kaldi_decoder.FasterDecoderOptions()
    opts.beam, opts.max_active, opts.min_active = beam, max_active, min_active
    decoder = kaldi_decoder.FasterDecoder(graph, opts)
    decoder.decode(kaldi_decoder.DecodableCtc(np.ascontiguousarray(scores, dtype=np.float32)))
    final = decoder.reached_final()
    ok, lat = decoder.get_best_path(use_final_probs=final)
    if not ok:
        return None
    ok, ilabels, olabels, weight = kaldifst.get_linear_symbol_sequence(lat)
    return (final, list(ilabels), list(olabels), float(weight.value1 + weight.value2)) if ok else None


def viterbi_align(gmm: DiagGmmSet, feats: np.ndarray, graph: kaldifst.StdVectorFst,
                  acoustic_scale: float, beam: float, retry_beam: float):
    """Best path of `graph` for the frames: (senone per frame, acoustic log-likelihood) or None."""
    ll = gmm.loglik(feats)
    for b in (beam, retry_beam):
        res = best_path(graph, ll * acoustic_scale, b)
        if res is not None and res[0]:
            ali = np.asarray(res[1], dtype=np.int32) - 1
            if len(ali) == len(feats):
                return ali, float(ll[np.arange(len(ali)), ali].sum())
    return None


def align_corpus(gmm, corpus: Corpus, graphs: dict, acoustic_scale=0.1, beam=10.0, retry_beam=40.0):
    """Align every utterance; returns ({utt: senone ali}, failed utts, average log-likelihood/frame)."""
    ali, failed, total, frames = {}, [], 0.0, 0
    for utt in corpus.utts:
        res = viterbi_align(gmm, corpus.feats[utt], graphs[utt], acoustic_scale, beam, retry_beam)
        if res is None:
            failed.append(utt)
            continue
        ali[utt], ll = res
        total, frames = total + ll, frames + len(res[0])
    return ali, failed, total / max(frames, 1)


def phone_segments(ali: np.ndarray, tree: ContextTree, topo: list[TopologyEntry]) -> list[tuple[int, int, int]]:
    """(phone, first frame, end frame) instances of a senone alignment. A new instance starts
    where the phone changes or the HMM state sequence takes a step its topology forbids."""
    allowed = {p: [{j for j, _ in arcs} for arcs in e.transitions] for e in topo for p in e.phones}
    segs = []
    prev = None
    for t, pdf in enumerate(ali.tolist()):
        phone, state = tree.pdf_info[pdf]
        if prev is None or prev[0] != phone or state not in allowed[phone][prev[1]]:
            segs.append([phone, t, t + 1])
        segs[-1][2] = t + 1
        prev = (phone, state)
    return [tuple(s) for s in segs]


def load_model(model_dir: str | Path, name: str = "final.pt") -> tuple[DiagGmmSet, ContextTree]:
    """The GMMs `name` (final.pt, or a SAT system's speaker-independent ALIMDL) and the tree."""
    model_dir = Path(model_dir)
    for f in (name, "tree"):
        if not (model_dir / f).is_file():
            raise AsrkdError(f"{model_dir}/{f}: missing (train the model first)")
    state = load_checkpoint(model_dir / name)
    return DiagGmmSet(state["means"], state["vars"], state["logw"]), ContextTree.read(model_dir / "tree")


def speech_pdfs(tree: ContextTree, lang_dir: str | Path) -> np.ndarray:
    """Whether each pdf belongs to a non-silence phone."""
    silence = {int(x) for x in (Path(lang_dir) / "phones" / "silence.int").read_text().split()}
    return np.array([phone not in silence for phone, _ in tree.pdf_info])


def model_features(model_dir: str | Path):
    """The features function of a GMM model dir: with its `final.mat` (LDA+MLLT) where it has one."""
    transform = FeatureTransform.read(model_dir)
    return functools.partial(gmm_features, transform=transform) if transform else gmm_features


def save_model(model_dir: Path, gmm: DiagGmmSet, tree: ContextTree, transform: FeatureTransform | None = None) -> None:
    tree.write(model_dir / "tree")
    if transform is not None:
        transform.write(model_dir)
    save_checkpoint(model_dir / "final.pt", gmm.state_dict(), {"kind": "gmm"})


def is_sat(model_dir: str | Path) -> bool:
    """Whether a GMM model dir is a speaker-adapted (SAT) system, aligned and decoded with fMLLR."""
    return (Path(model_dir) / ALIMDL).is_file()


def fmllr_align(gmm_si: DiagGmmSet, gmm: DiagGmmSet, corpus: Corpus, graphs: dict, utt2spk: dict, speech: np.ndarray,
                beam: float, retry_beam: float) -> tuple[dict, dict, dict]:
    """Kaldi align_fmllr.sh: align with the speaker-independent GMMs, estimate each speaker's
    fMLLR transform of `gmm` from that alignment (silence frames out; component posteriors of
    the speaker-independent GMMs, gmm-est-fmllr-gpost), align again with `gmm` on the adapted
    features: (alignment, log-likelihood per utterance, {speaker: transform})."""
    first = {}
    for utt in corpus.utts:
        res = viterbi_align(gmm_si, corpus.feats[utt], graphs[utt], 0.1, beam, retry_beam)
        if res is not None:
            first[utt] = res[0]
    transforms, _ = speaker_fmllr(gmm, corpus.feats, first, speech.astype(np.float64), utt2spk, gmm_si)
    adapt = SpeakerTransforms(transforms, utt2spk)
    ali, loglik = {}, {}
    for utt in corpus.utts:
        if utt2spk[utt] not in transforms:  # none of the speaker's utterances aligned in the first pass
            continue
        res = viterbi_align(gmm, adapt(utt, corpus.feats[utt]), graphs[utt], 0.1, beam, retry_beam)
        if res is not None:
            ali[utt], loglik[utt] = res
    return ali, loglik, transforms


def _align_job(data_dir, lang_dir: Path, model_dir: Path, utts: list[str], beam: float, retry_beam: float) -> dict:
    """One job: align `utts` (a split of the data dir; for a SAT system whole speakers); the
    senones and acoustic log-likelihood of each aligned utterance, the fMLLR transforms (SAT),
    what was skipped and the OOV count."""
    gmm, tree = load_model(model_dir)
    corpus = load_corpus(data_dir, lang_dir, utts, model_features(model_dir))
    graphs = compile_training_graphs(corpus, lang_dir, tree, read_topo(lang_dir / "topo"))
    ali, loglik, trans = {}, {}, {}
    if is_sat(model_dir):
        gmm_si, _ = load_model(model_dir, ALIMDL)
        ali, loglik, trans = fmllr_align(gmm_si, gmm, corpus, graphs, read_utt2spk(data_dir, corpus.utts),
                                         speech_pdfs(tree, lang_dir), beam, retry_beam)
    else:
        for utt in corpus.utts:
            res = viterbi_align(gmm, corpus.feats[utt], graphs[utt], 0.1, beam, retry_beam)
            if res is not None:
                ali[utt], loglik[utt] = res
    return {"utts": corpus.utts, "ali": ali, "loglik": loglik, "trans": trans, "skipped": corpus.skipped,
            "oov": corpus.oov_words}


def split_by_speaker(keys: list[str], utt2spk: dict[str, str], nj: int) -> list[list[str]]:
    """`keys` in `nj` parts that keep each speaker's utterances together (Kaldi split_data.sh)."""
    speakers = sorted({utt2spk[u] for u in keys}, key=sort_key)
    part = {s: i % nj for i, s in enumerate(speakers)}
    parts = [[u for u in keys if part[utt2spk[u]] == j] for j in range(min(nj, len(speakers)))]
    return [p for p in parts if p]


def align(data_dir: str | Path, lang_dir: str | Path, model_dir: str | Path, ali_dir: str | Path,
          beam: float = 10.0, retry_beam: float = 40.0, force: bool = False, nj: int = 1,
          jobs: JobConfig | None = None) -> dict:
    """Force-align a data dir with a trained GMM-HMM into `ali_dir`, in `nj` jobs (a split of
    the utterances each; local, or on Slurm with `jobs`). A SAT system aligns in two passes
    with fMLLR (`fmllr_align`) and leaves the speakers' transforms in `ali_dir/trans.ark`."""
    ali_dir, model_dir, lang_dir = Path(ali_dir), Path(model_dir), Path(lang_dir)
    out = Output(ali_dir, "align", {"beam": beam, "retry_beam": retry_beam},
                 {"data": data_dir, "lang": lang_dir, "model": model_dir})
    if out.done(force):
        return json.loads((ali_dir / "align_report.json").read_text())
    t0 = time.time()
    keys = sorted(read_table(Path(data_dir) / "feats.scp"), key=sort_key)
    nj = max(1, min(nj, len(keys)))
    parts = split_by_speaker(keys, read_utt2spk(data_dir, keys), nj) if is_sat(model_dir) else \
        [keys[j::nj] for j in range(nj)]
    out.start()
    res = run_jobs(_align_job, [(data_dir, lang_dir, model_dir, p, beam, retry_beam) for p in parts],
                   "align", ali_dir / "log", jobs, parallel=len(parts), key=split_key(out.key(), parts))
    ali, loglik = {u: a for r in res for u, a in r["ali"].items()}, {u: v for r in res for u, v in r["loglik"].items()}
    utts = sorted((u for r in res for u in r["utts"]), key=sort_key)
    skipped = sorted((s for r in res for s in r["skipped"]), key=lambda s: sort_key(s.split()[0]))
    failed = [u for u in utts if u not in ali]
    avg_ll = sum(loglik[u] for u in utts if u in ali) / max(sum(len(ali[u]) for u in ali), 1)
    oov = sum(r["oov"] for r in res)  # each job warned of its own
    if failed:
        log.warning("%s: %d utterances failed to align, listed in align_failed.txt", ali_dir, len(failed))
    _, tree = load_model(model_dir)
    topo = read_topo(lang_dir / "topo")
    for f in ("final.pt", "tree", MATRIX, "splice_opts", ALIMDL):
        if (model_dir / f).is_file():
            shutil.copy(model_dir / f, ali_dir / f)
    if is_sat(model_dir):
        SpeakerTransforms({s: w for r in res for s, w in r["trans"].items()}, {}).write(ali_dir)
    inv = {i: p for p, i in read_symbols(lang_dir / "phones.txt").items()}
    ctm = [f"{utt} 1 {s * 0.01:.2f} {(e - s) * 0.01:.2f} {inv[p]}"  # 10 ms frame shift
           for utt in sorted(ali, key=sort_key) for p, s, e in phone_segments(ali[utt], tree, topo)]
    report = AlignmentDir.write(ali_dir, ali, tree.num_pdfs, failed + [s.split()[0] for s in skipped], ctm,
                                {"avg_loglik_per_frame": avg_ll, "oov_words": oov, "skipped": skipped,
                                 "seconds": round(time.time() - t0, 1), "environment": environment()})
    out.finish()
    log.info("%s: %d aligned, %d failed, avg log-likelihood/frame %.3f (%.0f s)",
             ali_dir, len(ali), len(failed), avg_ll, time.time() - t0)
    return report

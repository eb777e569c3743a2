"""Monophone GMM-HMM training and Viterbi forced alignment (Kaldi train_mono.sh + align_si.sh).

GMMs see MFCC-like features: the DCT of the CMVN-normalised log-mel frames (13 cepstra,
liftered) with deltas and delta-deltas, because diagonal Gaussians need decorrelated
dimensions. Senone targets are per frame of the original fbank features (same frames).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import kaldi_decoder
import kaldifst
import kaldi_native_fbank as knf
import kaldiio
import numpy as np
import torch

from asrkd.data import read_table, sort_key
from asrkd.features import FeatureReader
from asrkd.hmm.gmm import DiagGmmSet
from asrkd.hmm.graphs import expand_hmms, transcript_phone_fst
from asrkd.hmm.topo import TopologyEntry, read_topo
from asrkd.lang import UNK, read_symbols
from asrkd.utils import AsrkdError, atomic_file, write_list

log = logging.getLogger(__name__)


def gmm_features(fbank: np.ndarray, num_ceps: int = 13, lifter: float = 22.0) -> np.ndarray:
    """Cepstra (orthonormal DCT-II of log-mels, Kaldi's liftering) + deltas + delta-deltas."""
    n = fbank.shape[1]
    k = np.arange(num_ceps)[:, None]
    dct = np.sqrt(2.0 / n) * np.cos(np.pi / n * (np.arange(n)[None, :] + 0.5) * k)
    dct[0] /= np.sqrt(2.0)
    lift = 1.0 + 0.5 * lifter * np.sin(np.pi * np.arange(num_ceps) / lifter)
    ceps = (fbank @ dct.T * lift).astype(np.float32)
    return knf.compute_deltas(knf.DeltaOptions(), np.ascontiguousarray(ceps))


class MonoPdfs:
    """Monophone pdfs: every (phone, HMM state) is its own pdf."""

    def __init__(self, topo: list[TopologyEntry]):
        self.entry, self.first_pdf, self.pdf_info = {}, {}, []
        for e in topo:
            for p in e.phones:
                self.entry[p], self.first_pdf[p] = e, len(self.pdf_info)
                self.pdf_info += [(p, s) for s in range(e.num_states)]

    @property
    def num_pdfs(self) -> int:
        return len(self.pdf_info)

    def hmm_for(self, phone: int) -> tuple[TopologyEntry, list[int]]:
        e = self.entry[phone]
        return e, [self.first_pdf[phone] + s for s in range(e.num_states)]


@dataclass
class Corpus:
    """Features and transcripts of a data dir, held in memory for GMM training."""

    utts: list[str]
    feats: dict[str, np.ndarray]
    words: dict[str, list[int]]
    skipped: list[str] = field(default_factory=list)
    oov_words: int = 0


def load_corpus(data_dir: str | Path, lang_dir: str | Path) -> Corpus:
    """CMVN'd fbank -> GMM features; transcript words as ids (OOVs -> <UNK>, counted)."""
    reader = FeatureReader(data_dir, cmvn=True)
    words = read_symbols(Path(lang_dir) / "words.txt")
    text = read_table(Path(data_dir) / "text", allow_empty_value=True)
    feats, ids, skipped, oov = {}, {}, [], 0
    for utt in reader.keys():
        toks = text.get(utt, "").split()
        if not toks:
            skipped.append(f"{utt} empty transcript")
            continue
        ids[utt] = [words.get(w, words[UNK]) for w in toks]
        oov += sum(w not in words for w in toks)
        feats[utt] = gmm_features(reader[utt])
    if oov:
        log.warning("%s: %d transcript words are not in %s/words.txt: aligned as %s", data_dir, oov, lang_dir, UNK)
    return Corpus(sorted(feats, key=sort_key), feats, ids, skipped, oov)


def viterbi_align(gmm: DiagGmmSet, feats: np.ndarray, graph: kaldifst.StdVectorFst,
                  acoustic_scale: float, beam: float, retry_beam: float):
    """Best path of `graph` for the frames: (pdf per frame, acoustic log-likelihood) or None."""
    ll = gmm.loglik(feats)
    decodable = kaldi_decoder.DecodableCtc(np.ascontiguousarray(ll * acoustic_scale, dtype=np.float32))
    for b in (beam, retry_beam):
        opts = kaldi_decoder.FasterDecoderOptions()
        opts.beam = b
        decoder = kaldi_decoder.FasterDecoder(graph, opts)
        decoder.decode(decodable)
        if decoder.reached_final():
            ok, lat = decoder.get_best_path()
            ok, ilabels, _, _ = kaldifst.get_linear_symbol_sequence(lat)
            ali = np.asarray(ilabels, dtype=np.int32) - 1
            if ok and len(ali) == len(feats):
                return ali, float(ll[np.arange(len(ali)), ali].sum())
    return None


def align_corpus(gmm, corpus: Corpus, graphs: dict, acoustic_scale=0.1, beam=10.0, retry_beam=40.0):
    """Align every utterance; returns ({utt: pdf ali}, failed utts, average log-likelihood/frame)."""
    ali, failed, total, frames = {}, [], 0.0, 0
    for utt in corpus.utts:
        res = viterbi_align(gmm, corpus.feats[utt], graphs[utt], acoustic_scale, beam, retry_beam)
        if res is None:
            failed.append(utt)
            continue
        ali[utt], ll = res
        total, frames = total + ll, frames + len(res[0])
    return ali, failed, total / max(frames, 1)


def equal_align(corpus: Corpus, graphs: dict, seed: int = 0):
    """Flat start: a path of each graph with the utterance's length, chosen uniformly."""
    ali, failed = {}, []
    for utt in corpus.utts:
        ok, path = kaldifst.equal_align(graphs[utt], len(corpus.feats[utt]), seed)
        if ok:
            ok, ilabels, _, _ = kaldifst.get_linear_symbol_sequence(path)
        if not ok:
            failed.append(utt)
            continue
        ali[utt] = np.asarray(ilabels, dtype=np.int32) - 1
    return ali, failed


def stack(corpus: Corpus, ali: dict) -> tuple[np.ndarray, np.ndarray]:
    utts = [u for u in corpus.utts if u in ali]
    return np.concatenate([corpus.feats[u] for u in utts]), np.concatenate([ali[u] for u in utts])


def train_gmm(corpus: Corpus, graphs: dict, gmm: DiagGmmSet, ali: dict, var_floor: torch.Tensor,
              exp_dir: Path, num_iters: int, realign_iters: set[int], tot_gauss: int, max_iter_inc: int,
              acoustic_scale: float = 0.1, beam: float = 10.0,
              retry_beam: float = 40.0) -> tuple[DiagGmmSet, dict, list[dict]]:
    """EM with Viterbi re-alignment and mixture splitting; returns (gmm, alignment, history)."""
    history, failed = [], []
    x, a = stack(corpus, ali)
    for it in range(1, num_iters + 1):
        t0 = time.time()
        if it in realign_iters:
            ali, failed, _ = align_corpus(gmm, corpus, graphs, acoustic_scale, beam, retry_beam)
            if not ali:
                raise AsrkdError(f"{exp_dir}: no utterance could be aligned at iteration {it}")
            x, a = stack(corpus, ali)
        occ, m1, m2, total = gmm.accumulate(x, a)
        gmm.update(occ, m1, m2, var_floor)
        if it <= max_iter_inc:
            target = gmm.num_gauss() + max(0, tot_gauss - gmm.num_gauss()) // (max_iter_inc - it + 1)
            gmm.mix_up(target, occ.sum(1))
        history.append({"iter": it, "loglik_per_frame": total / len(a), "frames": int(len(a)),
                        "aligned": len(ali), "failed": len(failed), "num_gauss": gmm.num_gauss(),
                        "realigned": it in realign_iters, "seconds": round(time.time() - t0, 2)})
        log.info("iter %d: log-likelihood/frame %.3f, %d Gaussians, %d utts aligned, %d failed (%.1fs)",
                 it, history[-1]["loglik_per_frame"], gmm.num_gauss(), len(ali), len(failed), time.time() - t0)
    return gmm, ali, history


def compile_mono_graphs(corpus: Corpus, lang_dir: Path, pdfs: MonoPdfs) -> dict:
    L = kaldifst.StdVectorFst.read(str(lang_dir / "L.fst"))
    graphs = {}
    for utt in corpus.utts:
        g = expand_hmms(transcript_phone_fst(L, corpus.words[utt]), pdfs.hmm_for)
        kaldifst.arcsort(g, sort_type="ilabel")
        graphs[utt] = g
    return graphs


def write_alignment(exp_dir: Path, ali: dict, failed: list[str], num_pdfs: int, extra: dict) -> None:
    """`ali.ark/ali.scp` (int32 pdf per frame), pdf counts and priors, failures, a JSON report."""
    with open(exp_dir / "ali.ark", "wb") as fa, atomic_file(exp_dir / "ali.scp") as fs:
        for utt in sorted(ali, key=sort_key):
            kaldiio.save_ark(fa, {utt: ali[utt].astype(np.int32)}, scp=fs)
    counts = np.bincount(np.concatenate(list(ali.values())), minlength=num_pdfs)
    write_list(exp_dir / "pdf_counts", [" ".join(map(str, counts))])
    write_list(exp_dir / "align_failed.txt", sorted(failed, key=sort_key))
    report = {"aligned": len(ali), "failed": len(failed), "frames": int(counts.sum()),
              "num_pdfs": num_pdfs, "pdfs_seen": int((counts > 0).sum()), **extra}
    with atomic_file(exp_dir / "align_report.json") as f:
        json.dump(report, f, indent=2)


def train_mono(data_dir: str | Path, lang_dir: str | Path, exp_dir: str | Path, num_iters: int = 30,
               tot_gauss: int = 1000, seed: int = 0, force: bool = False) -> dict:
    """Flat-start monophone training; writes final.pt, ali.{ark,scp}, pdf_counts, log/train.json."""
    exp_dir, lang_dir = Path(exp_dir), Path(lang_dir)
    if (exp_dir / "final.pt").is_file() and not force:
        log.info("%s: final.pt exists, skipping (use --force to retrain)", exp_dir)
        return json.loads((exp_dir / "align_report.json").read_text())
    (exp_dir / "log").mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    pdfs = MonoPdfs(read_topo(lang_dir / "topo"))
    corpus = load_corpus(data_dir, lang_dir)
    graphs = compile_mono_graphs(corpus, lang_dir, pdfs)
    ali, failed = equal_align(corpus, graphs, seed)
    x, _ = stack(corpus, ali)
    gmm = DiagGmmSet.single(x.mean(0), x.var(0), pdfs.num_pdfs)
    log.info("%s: %d utterances, %d frames, %d pdfs; flat start", exp_dir, len(ali), len(x), pdfs.num_pdfs)
    # iteration 1 estimates from the equal alignment (Kaldi's iteration 0), then realign
    realign = set(range(2, 11)) | set(range(12, 21, 2)) | set(range(23, num_iters + 1, 3))
    var_floor = torch.as_tensor(0.01 * x.var(0), dtype=torch.float64)
    gmm, ali, history = train_gmm(corpus, graphs, gmm, ali, var_floor, exp_dir, num_iters, realign, tot_gauss,
                                  max_iter_inc=max(1, num_iters * 3 // 4))
    ali, failed, avg_ll = align_corpus(gmm, corpus, graphs)
    with atomic_file(exp_dir / "log" / "train.json") as f:
        json.dump(history, f, indent=1)
    write_alignment(exp_dir, ali, failed + [s.split()[0] for s in corpus.skipped], pdfs.num_pdfs,
                    {"avg_loglik_per_frame": avg_ll, "num_gauss": gmm.num_gauss(), "oov_words": corpus.oov_words,
                     "train_seconds": round(time.time() - t0, 1)})
    with atomic_file(exp_dir / "final.pt", "wb") as f:
        torch.save({"gmm": gmm.state_dict(), "kind": "mono", "pdf_info": pdfs.pdf_info}, f)
    log.info("%s: done in %.0f s: %d aligned, %d failed, avg log-likelihood %.3f",
             exp_dir, time.time() - t0, len(ali), len(failed), avg_ll)
    return json.loads((exp_dir / "align_report.json").read_text())

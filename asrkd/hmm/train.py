"""GMM-HMM training (Kaldi train_mono.sh, then train_deltas.sh): flat-start monophones,
then a phonetic decision tree over triphone contexts and tied-state triphone GMMs.

Each trainer writes `final.pt` (GMM parameters), `tree` and `log/train.json`; the
alignment of the training data is a separate step (`asrkd align`), as in Kaldi.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import kaldifst
import numpy as np
import torch

from asrkd.checkpoint import fingerprint, load_checkpoint, save_checkpoint
from asrkd.features import splice
from asrkd.hmm.align import (Corpus, align_corpus, cepstra, compile_training_graphs, load_corpus, load_model,
                             phone_segments, save_model, speech_pdfs)
from asrkd.hmm.alignment import AlignmentDir
from asrkd.hmm.gmm import DiagGmmSet
from asrkd.hmm.graphs import compile_graph, transcript_phone_fst
from asrkd.hmm.transform import (FeatureTransform, estimate_lda, estimate_mllt, lda_stats, mllt_stats,
                                  transform_means, variance_floor)
from asrkd.hmm.tree import ContextTree, GaussStats, build_tree, cluster_phones
from asrkd.outputs import Output
from asrkd.topo import read_topo
from asrkd.utils import AsrkdError, atomic_file, write_list

log = logging.getLogger(__name__)


def edge_silence_filter(sil: int, phones: list[int]) -> kaldifst.StdVectorFst:
    """Phone acceptor for the flat start: silence at both utterance edges, none in between
    (HTK's flat-start transcripts "sil w1 ... wn sil")."""
    f = kaldifst.StdVectorFst()
    for _ in range(3):
        f.add_state()
    f.start = 0
    f.add_arc(0, kaldifst.StdArc(sil, sil, 0, 1))
    for p in phones:
        if p != sil:
            f.add_arc(1, kaldifst.StdArc(p, p, 0, 1))
    f.add_arc(1, kaldifst.StdArc(sil, sil, 0, 2))
    f.set_final(2, 0)
    kaldifst.arcsort(f, sort_type="olabel")
    return f


def flat_start_graphs(corpus: Corpus, lang_dir: Path, tree: ContextTree, topo) -> dict:
    """Training graphs restricted by `edge_silence_filter` (the plain graph where that leaves
    no path). With optional silence everywhere, a two-word corpus like yesno converges to
    silence models that take the words; clean edge silence seeds SIL with real silence."""
    L = kaldifst.StdVectorFst.read(str(lang_dir / "L.fst"))
    sil = int((lang_dir / "phones" / "optional_silence.int").read_text().split()[0])
    F = edge_silence_filter(sil, [p for e in topo for p in e.phones])
    graphs = {}
    for utt in corpus.utts:
        LW = transcript_phone_fst(L, corpus.words[utt])
        FLW = kaldifst.compose(F, LW)
        kaldifst.connect(FLW)
        graphs[utt] = compile_graph(FLW if FLW.num_states else LW, tree, topo)
    return graphs


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


@dataclass
class Mllt:
    """MLLT re-estimation during EM (Kaldi train_lda_mllt.sh): at each of `iters`, after any
    re-alignment, the transform is followed by the MLLT estimated from the aligned frames of
    speech pdfs, the means are rotated with it and the features recomputed from the cepstra.
    `train_gmm` calls such a feature update (this, or `asrkd.hmm.sat.Sat`) through `features`,
    `update`, `state` and `restore`."""

    ceps: dict[str, np.ndarray]
    transform: FeatureTransform
    iters: set[int]
    speech_pdfs: np.ndarray | None = None  # bool per pdf of the tree trained: silence frames do not count
    name = "mllt"

    def features(self, corpus: Corpus) -> torch.Tensor:
        """Recompute the corpus' features with the transform; returns their variance floor."""
        corpus.feats = {u: self.transform(self.ceps[u]) for u in corpus.utts}
        return torch.as_tensor(variance_floor(list(corpus.feats.values())))

    def update(self, gmm: DiagGmmSet, corpus: Corpus, ali: dict) -> torch.Tensor:
        """Estimate and apply an MLLT; returns the new features' variance floor."""
        x, a = stack(corpus, ali)
        g, beta = mllt_stats(gmm, x, a, self.speech_pdfs[a])
        rotation = estimate_mllt(g, beta)
        self.transform = self.transform.compose(rotation)
        transform_means(gmm, rotation)
        return self.features(corpus)

    def state(self) -> dict:
        return {"transform": torch.from_numpy(self.transform.matrix)}

    def restore(self, state: dict) -> None:
        self.transform = FeatureTransform(state["transform"].numpy(), self.transform.context)


def train_gmm(corpus: Corpus, graphs: dict, gmm: DiagGmmSet, ali: dict, var_floor: torch.Tensor,
              exp_dir: Path, num_iters: int, realign_iters: set[int], tot_gauss: int, max_iter_inc: int,
              meta: dict, acoustic_scale: float = 0.1, beam: float = 10.0,
              retry_beam: float = 40.0, hook=None) -> tuple[DiagGmmSet, dict, list[dict]]:
    """EM with Viterbi re-alignment and mixture splitting (and with `hook`, a feature update
    such as `Mllt` at its iterations);
    returns (gmm, alignment, history). Every iteration is checkpointed to
    exp_dir/checkpoint.pt; a killed run resumes there when `meta` (options and data
    fingerprint) matches the checkpoint's."""
    history, failed, start = [], [], 1
    if tot_gauss < gmm.means.shape[0]:
        raise AsrkdError(f"--tot-gauss {tot_gauss} is below the number of pdfs ({gmm.means.shape[0]}), "
                         "each of which needs a Gaussian")
    write_list(exp_dir / "log" / "skipped.txt", corpus.skipped)
    if corpus.skipped:
        log.warning("%s: %d utterances left out of training (e.g. %s), listed in log/skipped.txt",
                    exp_dir, len(corpus.skipped), corpus.skipped[0])
    ckpt = exp_dir / "checkpoint.pt"
    meta = {**meta, "num_iters": num_iters, "tot_gauss": tot_gauss, "num_pdfs": gmm.means.shape[0]}
    if ckpt.is_file():
        state = load_checkpoint(ckpt, meta)
        if state["iter"] < num_iters:
            gmm = DiagGmmSet(state["means"], state["vars"], state["logw"])
            ali = {u: t.numpy() for u, t in state["ali"].items()}
            history, failed, start = state["history"], state["failed"], state["iter"] + 1
            if hook:
                hook.restore(state)
                floor = hook.features(corpus)
                if any(i < start for i in hook.iters):  # the floor of the features since the last update
                    var_floor = floor
            log.info("%s: resuming from the checkpoint of iteration %d", exp_dir, state["iter"])
    x, a = stack(corpus, ali)
    for it in range(start, num_iters + 1):
        t0 = time.time()
        if it in realign_iters:
            ali, failed, _ = align_corpus(gmm, corpus, graphs, acoustic_scale, beam, retry_beam)
            if not ali:
                raise AsrkdError(f"{exp_dir}: no utterance could be aligned at iteration {it}")
            x, a = stack(corpus, ali)
        if hook and it in hook.iters:  # the features change: so do the variance floor and the stacked frames
            var_floor = hook.update(gmm, corpus, ali)
            x, a = stack(corpus, ali)
        occ, m1, m2, total = gmm.accumulate(x, a)
        gmm.update(occ, m1, m2, var_floor)
        if it <= max_iter_inc:
            target = gmm.num_gauss() + max(0, tot_gauss - gmm.num_gauss()) // (max_iter_inc - it + 1)
            gmm.mix_up(target, occ)
        history.append({"iter": it, "loglik_per_frame": total / len(a), "frames": int(len(a)),
                        "aligned": len(ali), "failed": len(failed), "num_gauss": gmm.num_gauss(),
                        "realigned": it in realign_iters, **({hook.name: it in hook.iters} if hook else {}),
                        "seconds": round(time.time() - t0, 2)})
        log.info("iter %d: log-likelihood/frame %.3f, %d Gaussians, %d utts aligned, %d failed (%.1fs)",
                 it, history[-1]["loglik_per_frame"], gmm.num_gauss(), len(ali), len(failed), time.time() - t0)
        save_checkpoint(ckpt, {**gmm.state_dict(), "iter": it, "history": history, "failed": failed,
                               "ali": {u: torch.from_numpy(v) for u, v in ali.items()},
                               **(hook.state() if hook else {})}, meta)
    return gmm, ali, history


def _finish(out: Output, gmm: DiagGmmSet, tree: ContextTree, history: list[dict], t0: float,
            transform: FeatureTransform | None = None) -> list[dict]:
    exp_dir = out.path
    with atomic_file(exp_dir / "log" / "train.json") as f:
        json.dump(history, f, indent=1)
    save_model(exp_dir, gmm, tree, transform)
    (exp_dir / "checkpoint.pt").unlink(missing_ok=True)
    out.finish()
    log.info("%s: %d senones, %d Gaussians, trained in %.0f s", exp_dir, tree.num_pdfs, gmm.num_gauss(),
             time.time() - t0)
    return history


def _done(out: Output, force: bool) -> list[dict] | None:
    """The history of a finished model (skip it), or None after preparing `out` for training."""
    if out.done(force):
        return json.loads((out.path / "log" / "train.json").read_text())
    out.start()
    (out.path / "log").mkdir(exist_ok=True)
    return None


def _data_meta(data_dir: str | Path, **options) -> dict:
    """What a GMM checkpoint must share with the run that resumes it."""
    d = Path(data_dir)
    return {"data": fingerprint(d / "feats.scp", d / "text"), **options}


def train_mono(data_dir: str | Path, lang_dir: str | Path, exp_dir: str | Path, num_iters: int = 30,
               tot_gauss: int = 1000, seed: int = 0, force: bool = False) -> list[dict]:
    """Flat-start monophone training; returns the per-iteration history."""
    exp_dir, lang_dir = Path(exp_dir), Path(lang_dir)
    out = Output(exp_dir, "train-mono", {"num_iters": num_iters, "tot_gauss": tot_gauss, "seed": seed},
                 {"data": data_dir, "lang": lang_dir})
    if (done := _done(out, force)) is not None:
        return done
    t0 = time.time()
    topo = read_topo(lang_dir / "topo")
    tree = ContextTree.monophone({p: e.num_states for e in topo for p in e.phones})
    corpus = load_corpus(data_dir, lang_dir)
    graphs = compile_training_graphs(corpus, lang_dir, tree, topo)
    ali, failed = equal_align(corpus, flat_start_graphs(corpus, lang_dir, tree, topo), seed)
    if not ali:
        raise AsrkdError(f"{data_dir}: no utterance has a flat-start alignment")
    x, _ = stack(corpus, ali)
    gmm = DiagGmmSet.single(x.mean(0), x.var(0), tree.num_pdfs)
    log.info("%s: %d utterances, %d frames, %d pdfs; flat start", exp_dir, len(ali), len(x), tree.num_pdfs)
    # iteration 1 estimates from the equal alignment (Kaldi's iteration 0), then realign
    realign = set(range(2, 11)) | set(range(12, 21, 2)) | set(range(23, num_iters + 1, 3))
    var_floor = torch.as_tensor(0.01 * x.var(0), dtype=torch.float64)
    gmm, _, history = train_gmm(corpus, graphs, gmm, ali, var_floor, exp_dir, num_iters, realign, tot_gauss,
                                max_iter_inc=max(1, num_iters * 3 // 4), meta=_data_meta(data_dir, seed=seed))
    return _finish(out, gmm, tree, history, t0)


def frame_contexts(ali: np.ndarray, tree: ContextTree, topo) -> np.ndarray:
    """[T, 4] (left phone, phone, right phone, HMM state) of every frame of an alignment;
    the utterance edges are phone 0."""
    segs = phone_segments(ali, tree, topo)
    seq = [0] + [p for p, _, _ in segs] + [0]
    out = np.zeros((len(ali), 4), dtype=np.int64)
    for i, (_, s, e) in enumerate(segs):
        out[s:e, :3] = seq[i:i + 3]
    out[:, 3] = [tree.pdf_info[p][1] for p in ali.tolist()]
    return out


def tree_stats(corpus: Corpus, ali: dict, tree: ContextTree, topo) -> tuple[np.ndarray, np.ndarray, GaussStats]:
    """Gaussian statistics per seen (left, phone, right, HMM state) from an alignment:
    returns (contexts [K, 3], states [K], stats)."""
    utts = [u for u in corpus.utts if u in ali]
    keys = np.concatenate([frame_contexts(ali[u], tree, topo) for u in utts])
    x = np.concatenate([corpus.feats[u] for u in utts]).astype(np.float64)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    occ = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    s1 = np.stack([np.bincount(inv, x[:, d], len(uniq)) for d in range(x.shape[1])], 1)
    s2 = np.stack([np.bincount(inv, x[:, d] ** 2, len(uniq)) for d in range(x.shape[1])], 1)
    return uniq[:, :3], uniq[:, 3], GaussStats(occ, s1, s2)


def _source_alignment(corpus: Corpus, data_dir, ali_dir: Path) -> dict[str, np.ndarray]:
    src = AlignmentDir(ali_dir)
    ali = {u: src.targets(u, len(corpus.feats[u])) for u in src.keys() if u in corpus.feats}
    if not ali:
        raise AsrkdError(f"{ali_dir}/ali.scp: no alignment for any utterance of {data_dir}")
    return ali


def _tied_states(corpus: Corpus, ali: dict, src_tree: ContextTree, topo, lang_dir: Path, opts: dict,
                 exp_dir: Path) -> tuple[ContextTree, DiagGmmSet, dict, np.ndarray]:
    """A decision tree from the statistics of the aligned frames, one Gaussian per senone
    (Kaldi gmm-init-model) and the alignment mapped onto it (convert-ali): (tree, gmm,
    alignment, variance floor)."""
    t0 = time.time()
    contexts, states, stats = tree_stats(corpus, ali, src_tree, topo)
    total = stats.sum()
    var_floor = 0.01 * (total.s2 / total.occ - (total.s1 / total.occ) ** 2)
    central = {int(p): stats.sum(contexts[:, 1] == p) for p in np.unique(contexts[:, 1])}
    questions = cluster_phones(central, var_floor)
    phone_states = {p: e.num_states for e in topo for p in e.phones}
    silence = frozenset(int(x) for x in (lang_dir / "phones" / "silence.int").read_text().split())
    tree, leaf = build_tree(contexts, states, stats, questions, opts["num_leaves"], opts["min_leaf_occ"], var_floor,
                            phone_states, not_split=frozenset() if opts["split_silence"] else silence,
                            cluster=opts["cluster_leaves"])
    log.info("%s: %d questions, tree with %d senones (%d of silence) from %d seen (context, state) keys (%.0f s)",
             exp_dir, len(questions), tree.num_pdfs, sum(p in silence for p, _ in tree.pdf_info), len(contexts),
             time.time() - t0)
    # one Gaussian per leaf; leaves without frames keep the global Gaussian
    occ = np.maximum(leaf.occ, 1e-10)[:, None]
    mean = np.where(leaf.occ[:, None] > 0, leaf.s1 / occ, total.s1 / total.occ)
    var = np.where(leaf.occ[:, None] > 0, np.maximum(leaf.s2 / occ - mean**2, var_floor),
                   total.s2 / total.occ - (total.s1 / total.occ) ** 2)
    gmm = DiagGmmSet(torch.tensor(mean[:, None]), torch.tensor(var[:, None]), torch.zeros(tree.num_pdfs, 1))
    senone = {tuple(k): tree.senone(tuple(k[:3]), k[3]) for k in np.c_[contexts, states].tolist()}
    tri_ali = {u: np.array([senone[k] for k in map(tuple, frame_contexts(a, src_tree, topo).tolist())],
                           dtype=np.int32) for u, a in ali.items()}
    return tree, gmm, tri_ali, var_floor


def _train_tied(out: Output, data_dir, lang_dir: Path, ali_dir: Path, corpus: Corpus, ali: dict, src_tree, topo,
                opts: dict, hook=None) -> tuple[DiagGmmSet, ContextTree, dict, list[dict]]:
    """Tree, initial model and EM (re-aligned every 10 iterations, with the feature update
    `hook`) of a triphone system: (gmm, tree, final alignment, history)."""
    tree, gmm, tri_ali, var_floor = _tied_states(corpus, ali, src_tree, topo, lang_dir, opts, out.path)
    speech = speech_pdfs(tree, lang_dir)
    if hook:
        hook.speech_pdfs = speech
    graphs = compile_training_graphs(corpus, lang_dir, tree, topo)
    num_iters = opts["num_iters"]
    gmm, ali, history = train_gmm(corpus, graphs, gmm, tri_ali, torch.as_tensor(var_floor), out.path, num_iters,
                                  set(range(10, num_iters, 10)), opts["tot_gauss"],
                                  max_iter_inc=max(1, num_iters * 5 // 7),
                                  meta=_data_meta(data_dir, ali=fingerprint(ali_dir / "ali.scp"), **opts), hook=hook)
    history[0]["tree_leaves"] = tree.num_pdfs
    history[0]["silence_senones"] = int((~speech).sum())
    return gmm, tree, ali, history


def train_tri(data_dir: str | Path, lang_dir: str | Path, ali_dir: str | Path, exp_dir: str | Path,
              num_leaves: int = 1500, tot_gauss: int = 8000, num_iters: int = 35, min_leaf_occ: float = 100.0,
              split_silence: bool = True, cluster_leaves: bool = False, force: bool = False) -> list[dict]:
    """Tied-state triphones on cepstra with deltas (Kaldi train_deltas.sh) from a (monophone)
    alignment: questions by phone clustering, a decision tree grown to `num_leaves` (silence
    phones split by context or not), its leaves optionally clustered, one Gaussian per senone
    from the tree statistics, then EM with re-alignment and mixing up to `tot_gauss`."""
    exp_dir, lang_dir, ali_dir = Path(exp_dir), Path(lang_dir), Path(ali_dir)
    opts = {"num_leaves": num_leaves, "tot_gauss": tot_gauss, "num_iters": num_iters, "min_leaf_occ": min_leaf_occ,
            "split_silence": split_silence, "cluster_leaves": cluster_leaves}
    out = Output(exp_dir, "train-tri", opts, {"data": data_dir, "lang": lang_dir, "ali": ali_dir})
    if (done := _done(out, force)) is not None:
        return done
    t0 = time.time()
    _, src_tree = load_model(ali_dir)
    corpus = load_corpus(data_dir, lang_dir)
    ali = _source_alignment(corpus, data_dir, ali_dir)
    gmm, tree, _, history = _train_tied(out, data_dir, lang_dir, ali_dir, corpus, ali, src_tree,
                                        read_topo(lang_dir / "topo"), opts)
    return _finish(out, gmm, tree, history, t0)


def train_lda_mllt(data_dir: str | Path, lang_dir: str | Path, ali_dir: str | Path, exp_dir: str | Path,
                   num_leaves: int = 1500, tot_gauss: int = 8000, num_iters: int = 35, min_leaf_occ: float = 100.0,
                   split_silence: bool = True, cluster_leaves: bool = False, context: int = 3, lda_dim: int = 40,
                   mllt_iters: tuple[int, ...] = (2, 4, 6, 12), force: bool = False) -> list[dict]:
    """Tied-state triphones on LDA+MLLT features (Kaldi train_lda_mllt.sh): the cepstra of
    2 x `context` + 1 frames spliced and projected by LDA to `lda_dim` dimensions, with the
    aligned (non-silence) senones of `ali_dir` as classes; then, as `train_tri`, a new tree and
    EM, with an MLLT estimated at `mllt_iters`. Writes `final.mat` beside the model."""
    exp_dir, lang_dir, ali_dir = Path(exp_dir), Path(lang_dir), Path(ali_dir)
    opts = {"num_leaves": num_leaves, "tot_gauss": tot_gauss, "num_iters": num_iters, "min_leaf_occ": min_leaf_occ,
            "split_silence": split_silence, "cluster_leaves": cluster_leaves, "context": context, "lda_dim": lda_dim,
            "mllt_iters": sorted(mllt_iters)}
    out = Output(exp_dir, "train-lda-mllt", opts, {"data": data_dir, "lang": lang_dir, "ali": ali_dir})
    if (done := _done(out, force)) is not None:
        return done
    t0 = time.time()
    _, src_tree = load_model(ali_dir)
    corpus = load_corpus(data_dir, lang_dir, features=cepstra)
    ali = _source_alignment(corpus, data_dir, ali_dir)
    ceps, speech = corpus.feats, speech_pdfs(src_tree, lang_dir)
    utts = [u for u in corpus.utts if u in ali]
    x = np.concatenate([splice(ceps[u], context, context) for u in utts])
    a = np.concatenate([ali[u] for u in utts])
    lda = estimate_lda(*lda_stats(x, a, speech[a], src_tree.num_pdfs), lda_dim)
    del x
    mllt = Mllt(ceps, FeatureTransform(lda, context), set(mllt_iters))
    mllt.features(corpus)
    log.info("%s: LDA [%d x %d] from %d frames of %d speech senones", exp_dir, *lda.shape, int(speech[a].sum()),
             int(speech.sum()))
    gmm, tree, _, history = _train_tied(out, data_dir, lang_dir, ali_dir, corpus, ali, src_tree,
                                        read_topo(lang_dir / "topo"), opts, mllt)
    return _finish(out, gmm, tree, history, t0, mllt.transform)

"""Hybrid Viterbi decoding with HCLG (Kaldi decode.sh with decode-faster).

An acoustic scorer gives every utterance a [T, num_senones] matrix of log-likelihoods:
a GMM's directly, a neural model's as log posterior − log prior (an ensemble's as the log
of its members' mean posterior), from the models themselves or from stored posteriors.
kaldi-decoder's FasterDecoder searches HCLG with the scores multiplied by the acoustic
scale 1/LMWT. A grid of LM weights and insertion penalties on a tuning set (dev) is decoded
once into lattices and rescored (`asrkd.decode.lattice`) to choose the best pair; where that
pair lies on an edge of the grid, the grid is widened on that side and the best pair chosen
again (`widen_grid`). The WER reported for the chosen pair, on dev as on test, is one
FasterDecoder pass at it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from functools import partial
from pathlib import Path

import kaldifst
import kaldiio
import numpy as np
import torch

from asrkd.data import read_table, sort_key
from asrkd.decode.lattice import SearchGraph, lattice_search, warm_up
from asrkd.decode.score import compute_wer, format_wer, write_score
from asrkd.environment import environment
from asrkd.jobs import JobConfig, run_jobs
from asrkd.features import FeatureReader, check_feature_kind
from asrkd.hmm.align import ALIMDL, best_path, is_sat, load_model, model_features
from asrkd.hmm.fmllr import SpeakerTransforms
from asrkd.hmm.graphs import map_arcs
from asrkd.lang import read_symbols
from asrkd.nnet.model import load_nnet
from asrkd.nnet.soft_targets import average_posteriors
from asrkd.checkpoint import fingerprint
from asrkd.outputs import Output
from asrkd.utils import AsrkdError, atomic_file, relocate_scp, write_list

log = logging.getLogger(__name__)
MAX_ACTIVE = 15000  # tokens kept per frame; at 7000 test WERs lost up to 0.31 to search errors (docs/benchmarks.md)
GRID_BEAM = 14.0  # a grid's lattice search; at its middle penalty about the cost of 13 without (docs/benchmarks.md)
MAX_WIDEN = 3  # widenings of each side of a grid whose chosen pair lies on that edge


class GmmScorer:
    """Log-likelihoods of a GMM-HMM model dir (final.pt + tree) on a data dir's features. A
    SAT model scores features adapted by the speakers' fMLLR `transforms` (a dir with
    trans.ark), or with `si` its speaker-independent final.alimdl the unadapted ones."""

    def __init__(self, model_dir: str | Path, data_dir: str | Path, log_prior: np.ndarray | None = None,
                 transforms: str | Path | None = None, si: bool = False):
        if is_sat(model_dir) and not si and transforms is None:
            raise AsrkdError(f"{model_dir}: a speaker-adapted (SAT) model; decode it with `asrkd decode-fmllr`, or give "
                             "the speakers' fMLLR transforms (--transform-dir)")
        if si and not is_sat(model_dir):
            raise AsrkdError(f"{model_dir}: not a SAT model, it has no speaker-independent final.alimdl")
        self.gmm, tree = load_model(model_dir, ALIMDL if si else "final.pt")
        self.num_pdfs = tree.num_pdfs
        self.sources = {"model": model_dir, **({"fmllr": transforms} if transforms else {})}
        self.tree = fingerprint(Path(model_dir) / "tree")
        self.features = model_features(model_dir)
        check_feature_kind(data_dir, "fbank", model_dir)
        self.reader = FeatureReader(data_dir, cmvn=True)
        self.adapt = None
        if transforms is not None:
            self.adapt = SpeakerTransforms.read(transforms, read_table(Path(data_dir) / "utt2spk"))
        self.log_prior = np.zeros(self.num_pdfs, dtype=np.float32) if log_prior is None else log_prior

    def keys(self) -> list[str]:
        return self.reader.keys()

    def feats(self, utt: str) -> np.ndarray:
        """The model's features of an utterance (adapted to its speaker where there are transforms)."""
        x = self.features(self.reader[utt])
        return self.adapt(utt, x) if self.adapt else x

    def __call__(self, utt: str) -> np.ndarray:
        return self.gmm.loglik(self.feats(utt))

    def log_posterior(self, utt: str) -> np.ndarray:
        """Unnormalised log p(s|x) = log p(x|s) + log p(s) (argmax is what frame accuracy needs)."""
        return self(utt) + self.log_prior


class PosteriorScorer:
    """Scaled likelihoods from log-posterior matrices (one scp per model): log of the
    members' arithmetic mean posterior minus the log prior from alignment counts."""

    def __init__(self, post_scps: list[str | Path], log_prior: np.ndarray):
        for s in post_scps:
            if not Path(s).is_file():
                raise AsrkdError(f"{s}: no such posterior scp")
        self.tables = [kaldiio.load_scp(str(s)) for s in post_scps]
        self.log_prior = log_prior
        self.num_pdfs = len(self.log_prior)
        self.sources = {f"posteriors_{k}": s for k, s in enumerate(post_scps)}
        self.tree = None
        for scp, table in zip(post_scps[1:], self.tables[1:]):
            differ = set(self.tables[0]) ^ set(table)
            if differ:
                raise AsrkdError(f"{scp}: covers different utterances from {post_scps[0]} "
                                 f"(e.g. {sorted(differ)[0]})")

    def keys(self) -> list[str]:
        return sorted(self.tables[0], key=sort_key)

    def log_posterior(self, utt: str) -> np.ndarray:
        return average_posteriors([torch.tensor(t[utt]) for t in self.tables]).numpy()

    def __call__(self, utt: str) -> np.ndarray:
        return self.log_posterior(utt) - self.log_prior


class NnetScorer:
    """Scaled likelihoods of neural models run on a data dir's features: one model, or an
    ensemble (log of the members' mean posterior, `average_posteriors` at T=1), minus the log prior."""

    def __init__(self, model_dirs: list[str | Path], data_dir: str | Path, log_prior: np.ndarray | None = None):
        self.models = [load_nnet(d) for d in model_dirs]
        self.num_pdfs = self.models[0].arch["num_senones"]
        self.sources = {f"nnet_{k}": d for k, d in enumerate(model_dirs)}
        trees = {m.info.get("tree") for m in self.models}
        if len(trees) > 1:
            raise AsrkdError(f"{model_dirs[0]} and the other models were trained on different trees' alignments")
        self.tree = trees.pop()
        self.log_prior = np.zeros(self.num_pdfs, dtype=np.float32) if log_prior is None else log_prior
        for d, m in zip(model_dirs, self.models):
            check_feature_kind(data_dir, m.info.get("features"), d)
            if m.arch["num_senones"] != len(self.log_prior):
                raise AsrkdError(f"{d}: model has {m.arch['num_senones']} senones, the priors {len(self.log_prior)}")
        self.reader = FeatureReader(data_dir, cmvn=True)

    def keys(self) -> list[str]:
        return self.reader.keys()

    def member_logits(self, utt: str) -> list[torch.Tensor]:
        feats = self.reader[utt]
        return [m.logits(feats) for m in self.models]

    def log_posterior(self, utt: str) -> np.ndarray:
        return average_posteriors(self.member_logits(utt)).numpy()

    def __call__(self, utt: str) -> np.ndarray:
        return self.log_posterior(utt) - self.log_prior


def write_log_posteriors(scorer, out_dir: str | Path) -> int:
    """`out_dir/logpost.{ark,scp}`: every utterance's log posteriors (Kaldi float matrices),
    written atomically; returns the number of utterances."""
    out_dir = Path(out_dir).resolve()
    with Output(out_dir, "nnet-forward", {}, {"data": scorer.reader.path, **scorer.sources}).writing() as tmp:
        with open(tmp / "logpost.ark", "wb") as fa, open(tmp / "logpost.scp", "w") as fs:
            for u in scorer.keys():
                kaldiio.save_ark(fa, {u: scorer.log_posterior(u)}, scp=fs)
        relocate_scp(tmp / "logpost.scp", tmp, out_dir)
    return len(scorer.keys())


def decode_utterance(graph, loglikes: np.ndarray, acoustic_scale: float, beam: float, max_active: int):
    """(word ids, reached a final state, cost) of the best path for one utterance."""
    res = best_path(graph, loglikes * acoustic_scale, beam, max_active)
    if res is None:
        return None, False, float("inf")
    final, _, words, cost = res
    return words, final, cost


def add_word_penalty(graph: kaldifst.StdVectorFst, penalty: float) -> kaldifst.StdVectorFst:
    """`graph` with `penalty` added to every word-emitting arc (Kaldi's lattice-add-penalty
    --word-ins-penalty, in graph-cost units): a copy, or `graph` itself for penalty 0."""
    if penalty == 0:
        return graph
    out = graph.copy()
    map_arcs(out, lambda a: kaldifst.StdArc(a.ilabel, a.olabel, a.weight.value + penalty, a.nextstate)
             if a.olabel else None)
    return out


_GRAPHS: dict = {}  # this process's search graph: built once, shared by forked jobs


def search_graph(hclg: str, penalty: float, lattice: bool, num_pdfs: int):
    """HCLG with `penalty` on its word arcs, for lattice search a warmed-up `SearchGraph`;
    kept for the next call with the same arguments (one graph at a time)."""
    key = (hclg, penalty, lattice)
    if key not in _GRAPHS:
        _GRAPHS.clear()
        graph = add_word_penalty(kaldifst.StdVectorFst.read(hclg), penalty)
        if lattice:
            graph = SearchGraph(graph)
            warm_up(graph, num_pdfs)
        _GRAPHS[key] = graph
    return _GRAPHS[key]


def _search(utt: str, ll: np.ndarray, spec: dict, lines: list, skipped: list) -> dict:
    """Best word ids of one utterance per (LM weight, penalty): one FasterDecoder pass for a
    single pair; for a grid one lattice search at the middle pair, rescored at every pair."""
    beam, max_active, weights = spec["beam"], spec["max_active"], spec["weights"]
    g = search_graph(spec["hclg"], spec["centre"][1], len(weights) > 1, ll.shape[1])
    if len(weights) == 1:
        (lmwt, wip), = weights
        words, final, cost = decode_utterance(g, ll, 1.0 / lmwt, beam, max_active)
        paths = [None if words is None else (words, cost)]
    else:
        lmwt0, wip0 = spec["centre"]
        lat = lattice_search(g, ll / lmwt0, beam, max_active)
        final = lat is not None and lat.final
        paths = [None] * len(weights) if lat is None else lat.best_paths(
            g, np.array([lmwt0 / w for w, _ in weights]), np.array([p - wip0 for _, p in weights]))
    out = {}
    for (lmwt, wip), path in zip(weights, paths):
        if path is None:
            skipped.append(f"{utt} lmwt {lmwt:g} penalty {wip:g}: no surviving path")
            continue
        out[lmwt, wip] = path[0]
        lines.append(f"{utt} search={'pass' if len(weights) == 1 else 'lattice'} lmwt={lmwt:g} wip={wip:g} "
                     f"frames={len(ll)} cost={path[1]:.2f} final={int(final)}")
    return out


def _decode_job(spec: dict, scorer, utts: list[str]) -> dict:
    """One job: score and search `utts` (one split of the data) at `spec`'s weights."""
    weights = spec["weights"]
    torch.set_num_threads(1)
    hyps, lines, skipped = {w: {} for w in weights}, [], []
    score_s = search_s = 0.0
    frames = 0
    for utt in utts:
        t0 = time.process_time()
        try:
            ll = scorer(utt)
        except Exception as e:  # an unreadable matrix: skip and list it, never crash the job
            skipped.append(f"{utt} {type(e).__name__}: {e}")
            continue
        if ll.ndim != 2 or ll.shape[1] != scorer.num_pdfs or not np.isfinite(ll).all():
            skipped.append(f"{utt} scores of shape {ll.shape} (expected [T, {scorer.num_pdfs}]) or not finite")
            continue
        t1 = time.process_time()
        frames += len(ll)
        for w, words in _search(utt, ll, spec, lines, skipped).items():
            hyps[w][utt] = words
        score_s, search_s = score_s + t1 - t0, search_s + time.process_time() - t1
    return {"hyps": hyps, "lines": lines, "skipped": skipped, "frames": frames, "score_seconds": score_s,
            "search_seconds": search_s, "environment": environment()}


def _run_jobs(graph_dir: Path, scorer, weights: list, utts: list[str], beam: float, max_active: int, nj: int,
              jobs: JobConfig, work: Path, key: str) -> list[dict]:
    """Search every utterance in `nj` jobs (`asrkd.jobs`, a split of the utterances each):
    one FasterDecoder pass for a single pair (its penalty in the graph), a lattice search
    rescored at every pair for a grid."""
    # a grid is searched at its middle LM weight and penalty (medians), the others' differences added in rescoring
    centre = float(np.median([w for w, _ in weights])), float(np.median([p for _, p in weights]))
    if len(weights) == 1:
        centre = weights[0]
    spec = {"hclg": str(graph_dir / "HCLG.fst"), "weights": weights, "centre": centre, "beam": beam,
            "max_active": max_active}
    if jobs.cmd == "local":  # built once here; forked jobs share it
        search_graph(spec["hclg"], centre[1], len(weights) > 1, scorer.num_pdfs)
    nj = max(1, min(nj, len(utts)))
    key = hashlib.sha1(repr((key, weights, beam, max_active, nj)).encode()).hexdigest()[:12]
    return run_jobs(_decode_job, [(spec, scorer, utts[j::nj]) for j in range(nj)], "decode", work, jobs,
                    parallel=nj, key=key)


def _hyp_text(results: list[dict], weights: list, words: dict) -> dict:
    """{(LM weight, penalty): {utt: hypothesis text}} from the jobs' word ids."""
    return {w: {u: " ".join(words[i] for i in r["hyps"][w][u]) for r in results for u in r["hyps"][w]}
            for w in weights}


def _decode_options(scorer, lm_weights, word_ins_penalties, beam: float, grid_beam: float, max_active: int,
                    max_widen: int) -> dict:
    """The options a decode dir is made with (`asrkd.outputs`); the scorer's priors as a SHA-1."""
    prior = getattr(scorer, "log_prior", None)
    return {"lm_weights": list(lm_weights), "word_ins_penalties": list(word_ins_penalties), "beam": beam,
            "grid_beam": grid_beam, "max_active": max_active, "max_widen": max_widen,
            "priors": None if prior is None else hashlib.sha1(np.asarray(prior, np.float32).tobytes()).hexdigest()}


def _decode_task(graph_dir: Path, scorer, data_dir: Path, grid: bool, search: dict) -> dict:
    """What every search of one decode shares: `search`'s options with the graph, the scorer,
    its utterances, the references (required for a `grid`), utt2spk and the word symbols."""
    refs, utt2spk = references(data_dir, grid)
    words = {i: w for w, i in read_symbols(graph_dir / "words.txt").items()}
    utts = scorer.keys()
    if not utts:
        raise AsrkdError(f"{data_dir}: no utterance to decode")
    return {**search, "graph_dir": graph_dir, "scorer": scorer, "utts": utts, "refs": refs, "utt2spk": utt2spk,
            "words": words}


def _run_pairs(task: dict, pairs: list) -> list[dict]:
    """The jobs' results of `pairs`: a lattice search at the grid beam for several, one
    FasterDecoder pass at the beam for one."""
    return _run_jobs(task["graph_dir"], task["scorer"], pairs, task["utts"],
                     task["grid_beam"] if len(pairs) > 1 else task["beam"], task["max_active"], task["nj"],
                     task["jobs"] or JobConfig(), task["work"], task["key"])


def _search_pairs(task: dict, pairs: list) -> tuple[list, dict, dict]:
    """The jobs' results, hypotheses and (with references) WERs of `pairs`."""
    res = _run_pairs(task, pairs)
    text = _hyp_text(res, pairs, task["words"])
    refs, utt2spk = task["refs"], task["utt2spk"]
    return res, text, {w: compute_wer(refs, text[w], utt2spk) for w in pairs} if refs is not None else {}


def _tune_pair(task: dict, weights: list) -> tuple[list, dict, dict, tuple, list, list]:
    """Search the grid `weights` and choose its best pair, widening the grid (`widen_grid`)
    while that lies on an edge: (the grid's job results, hypotheses and WERs of every pair,
    the chosen pair, the widenings, the widened searches' job results)."""
    grid, hyps, wers = _search_pairs(task, weights)
    best = choose_weight(wers) if wers else weights[0]
    widened, wider = [], []
    if len(weights) > 1 and task["max_widen"] > 0:
        best, widened, wider = widen_grid(partial(_search_pairs, task), hyps, wers, task["max_widen"])
    return grid, hyps, wers, best, widened, wider


def _rerun_best(task: dict, weights: list, best: tuple, hyps: dict) -> tuple[list, dict]:
    """(job results, hypotheses) of the chosen pair: for a grid from one FasterDecoder pass,
    like test's and those of other models decoded at these weights (the lattice's path can
    differ by its pruning); for a single pair its search's."""
    if len(weights) == 1:
        return [], hyps[best]
    rerun = _run_pairs(task, [best])
    return rerun, _hyp_text(rerun, [best], task["words"])[best]


def _check_skipped(out_dir: Path, results: list[dict], num_utts: int, max_skipped: float) -> list[str]:
    """The jobs' skipped utterances, listed in log/skipped.txt; more than `max_skipped` of
    `num_utts` skipped is an error."""
    skipped = list(dict.fromkeys(s for r in results for s in r["skipped"]))
    if skipped:
        log.warning("%s: %d utterances skipped, listed in log/skipped.txt", out_dir, len(skipped))
    write_list(out_dir / "log" / "skipped.txt", skipped)
    if (bad := len({s.split()[0] for s in skipped})) > max_skipped * num_utts:
        raise AsrkdError(f"{out_dir}: {bad} of {num_utts} utterances skipped (more than {max_skipped:.0%}), first: "
                         f"{skipped[0]}; see {out_dir / 'log' / 'skipped.txt'}")
    return skipped


def _real_time_factors(grid: list[dict], wider: list[dict], rerun: list[dict], wall: float) -> dict:
    """Audio and wall seconds and the real-time factors per core: of all the scoring and
    search, and of the search alone (one pass, or the lattice passes and rescoring)."""
    audio = 0.01 * sum(r["frames"] for r in grid)  # 10 ms frame shift
    search_s = sum(r["search_seconds"] for r in grid + wider)  # one pass, or the lattice passes and rescoring
    cpu = sum(r["score_seconds"] + r["search_seconds"] for r in grid + wider + rerun)
    return {"audio_seconds": round(audio, 2), "wall_seconds": round(wall, 2),
            "rtf_per_core": cpu / audio if audio else None,
            "search_rtf_per_core": search_s / audio if audio else None}


def _decode_info(task: dict, weights: list, hyps: dict, wers: dict, best: tuple, widened: list, score: dict | None,
                 skipped: list, tuned_on: str, speed: dict, env: dict) -> dict:
    """decode_info.json: the grid, the chosen pair and its WER, the search options and speed."""
    lattice = len(weights) > 1
    return {"lm_weights": sorted({w for w, _ in hyps}), "word_ins_penalties": sorted({p for _, p in hyps}),
            "widened": widened, "best_lmwt": best[0], "best_wip": best[1], "tuned_on": tuned_on,
            "wer": score["wer"] if score else None, "ser": score["ser"] if score else None,
            "utts": len(task["utts"]), "skipped": len(skipped), "nj": task["nj"],
            "search": {"beam": task["beam"], "max_active": task["max_active"], "lattice": lattice,
                       **({"grid_beam": task["grid_beam"], "max_widen": task["max_widen"]} if lattice else {})},
            **speed, "wer_per_weight": {f"{w[0]:g}_{w[1]:g}": wers[w]["wer"] for w in wers},
            "environment": env}


def decode(graph_dir: str | Path, scorer, data_dir: str | Path, out_dir: str | Path,
           lm_weights: list[float] = (10.0,), word_ins_penalties: list[float] = (0.0,),
           tuned_on: str | Path | None = None, beam: float = 13.0, grid_beam: float = GRID_BEAM,
           max_active: int = MAX_ACTIVE, nj: int = 1, force: bool = False, max_widen: int = MAX_WIDEN,
           max_skipped: float = 0.05, jobs: JobConfig | None = None) -> dict:
    """Decode `data_dir` into `out_dir`: hyp/<lmwt>_<wip>.txt and wer_<lmwt>_<wip> for every
    LM weight and word insertion penalty, `text`/`wer` for the chosen pair: the best one
    here (the grid widened up to `max_widen` times per side while it lies on an edge), or
    with `tuned_on` the one chosen on that (dev) decode dir. More than `max_skipped` of the
    utterances skipped (no scores, no surviving path) is an error. The search runs in `nj`
    jobs, local or on Slurm (`jobs`)."""
    graph_dir, data_dir, out_dir = Path(graph_dir), Path(data_dir), Path(out_dir)
    check_graph(graph_dir, scorer)
    if tuned_on is not None:
        lm_weights, word_ins_penalties = tuned_weights(tuned_on)
    options = _decode_options(scorer, lm_weights, word_ins_penalties, beam, grid_beam, max_active, max_widen)
    out = Output(out_dir, "decode", options,
                 {"graph": graph_dir, "data": data_dir, "tuned_on": tuned_on, **getattr(scorer, "sources", {})})
    if out.done(force):
        return json.loads((out_dir / "decode_info.json").read_text())
    out.start()
    if min(lm_weights) <= 0:
        raise AsrkdError(f"LM weights must be positive (the acoustic scale is 1/LMWT), got {list(lm_weights)}")
    weights = [(float(w), float(p)) for w in lm_weights for p in word_ins_penalties]
    task = _decode_task(graph_dir, scorer, data_dir, len(weights) > 1,
                        {"beam": beam, "grid_beam": grid_beam, "max_active": max_active, "max_widen": max_widen,
                         "nj": nj, "jobs": jobs, "work": out_dir / "log", "key": out.key()})
    t0 = time.time()
    grid, hyps, wers, best, widened, wider = _tune_pair(task, weights)
    rerun, text = _rerun_best(task, weights, best, hyps)
    speed = _real_time_factors(grid, wider, rerun, time.time() - t0)
    skipped = _check_skipped(out_dir, grid + wider + rerun, len(task["utts"]), max_skipped)
    write_list(out_dir / "log" / "decode.log",
               sorted((ln for r in grid + wider + rerun for ln in r["lines"]), key=sort_key))
    write_hypotheses(out_dir, hyps, wers, text)
    score = compute_wer(task["refs"], text, task["utt2spk"]) if rerun else wers.get(best)
    if score:
        write_score(out_dir, score)
    info = _decode_info(task, weights, hyps, wers, best, widened, score, skipped, str(tuned_on or out_dir), speed,
                        grid[0]["environment"])  # a job's: torch on one thread
    write_list(out_dir / "best_lmwt", [f"{best[0]:g} {best[1]:g}"])
    with atomic_file(out_dir / "decode_info.json") as f:
        json.dump(info, f, indent=2)
    out.finish()
    log.info("%s: LM weight %g, penalty %g (chosen on %s), %s; RTF/core %.3f", out_dir, *best, info["tuned_on"],
             format_wer(score)[0] if score else "no references", info["rtf_per_core"] or 0)
    return info


def references(data_dir: Path, grid: bool) -> tuple[dict | None, dict | None]:
    """The data dir's reference transcripts (None without `text`; required to choose on a
    `grid`) and its utt2spk (None without)."""
    refs = read_table(data_dir / "text", allow_empty_value=True) if (data_dir / "text").is_file() else None
    if refs is None and grid:
        raise AsrkdError(f"{data_dir}/text: missing, so no LM weight can be chosen on this set")
    if refs is not None and not any(v.split() for v in refs.values()):
        raise AsrkdError(f"{data_dir / 'text'}: no reference words to score")
    return refs, read_table(data_dir / "utt2spk") if (data_dir / "utt2spk").is_file() else None


def tuned_weights(tuned_on: str | Path) -> tuple[list[float], list[float]]:
    """The (LM weight, penalty) chosen on a tuning set's decode dir, as one-point grids."""
    chosen = Path(tuned_on) / "best_lmwt"
    if not chosen.is_file():
        raise AsrkdError(f"{chosen}: missing (decode the tuning set with several LM weights first)")
    lmwt, wip = map(float, chosen.read_text().split())
    return [lmwt], [wip]


def write_hypotheses(out_dir: Path, hyps: dict, wers: dict, text: dict) -> None:
    """hyp/<lmwt>_<wip>.txt and wer_<lmwt>_<wip> of every pair (a grid's: the lattice's), and
    `text`, the chosen pair's hypotheses."""
    for w in hyps:
        name = f"{w[0]:g}_{w[1]:g}"
        write_list(out_dir / "hyp" / f"{name}.txt",
                   [f"{u} {hyps[w][u]}".rstrip() for u in sorted(hyps[w], key=sort_key)])
        if wers:
            write_list(out_dir / f"wer_{name}", format_wer(wers[w]))
    write_list(out_dir / "text", [f"{u} {text[u]}".rstrip() for u in sorted(text, key=sort_key)])


def check_graph(graph_dir: Path, scorer) -> None:
    """One-line errors for a graph over another senone inventory than the scorer's model."""
    info = graph_dir / "graph_info.json"
    if not (graph_dir / "HCLG.fst").is_file():
        raise AsrkdError(f"{graph_dir}/HCLG.fst: missing (make it with `asrkd make-graph`)")
    num_pdfs = json.loads(info.read_text())["num_pdfs"] if info.is_file() else None
    if num_pdfs is not None and num_pdfs != scorer.num_pdfs:
        raise AsrkdError(f"{graph_dir}: a graph over {num_pdfs} senones, the model has {scorer.num_pdfs}")
    tree = getattr(scorer, "tree", None)
    if tree and (graph_dir / "tree").is_file() and fingerprint(graph_dir / "tree") != tree:
        raise AsrkdError(f"{graph_dir}: built from another tree than the model's (its alignment's)")


def beyond_edge(chosen: float, values: list, positive: bool = False) -> tuple[str, float] | None:
    """("low" or "high", the value one step beyond that edge of the sorted grid `values`) when
    `chosen` lies on it: the step is the grid's spacing there. None inside, for a single value,
    or past the low edge of `positive` values where the next would be <= 0."""
    if len(values) < 2 or values[0] < chosen < values[-1]:
        return None
    if chosen == values[-1]:
        return "high", round(values[-1] + values[-1] - values[-2], 6)
    low = round(values[0] - (values[1] - values[0]), 6)
    return None if positive and low <= 0 else ("low", low)


def only_on_edge(wers: dict, axis: int, value: float) -> bool:
    """Whether the grid's lowest WER is reached only by pairs whose coordinate `axis` (0: LM
    weight, 1: penalty) is `value`: a tie with another row or column means a flat optimum,
    which a wider grid cannot improve on."""
    off = [r["wer"] for w, r in wers.items() if w[axis] != value]
    return not off or min(r["wer"] for w, r in wers.items() if w[axis] == value) < min(off)


def widen_grid(search, hyps: dict, wers: dict, max_widen: int = MAX_WIDEN) -> tuple[tuple, list, list]:
    """While the best pair of `wers` lies on an edge of the grid, and the lowest WER is found
    only on that edge (`only_on_edge`), widen the grid by one step on that side (at most
    `max_widen` times per side), `search` the new pairs and choose again. `hyps` and `wers`
    get the new pairs; returns the chosen pair, what was added and the new searches' job
    results."""
    best, widened, results, count = choose_weight(wers), [], [], {}
    while True:
        axes = [sorted({w for w, _ in wers}), sorted({p for _, p in wers})]
        for axis, (name, key) in enumerate((("LM weight", "lm_weight"), ("penalty", "word_ins_penalty"))):
            edge = beyond_edge(best[axis], axes[axis], positive=axis == 0)
            if edge is None or count.get((axis, edge[0]), 0) >= max_widen or not only_on_edge(wers, axis, best[axis]):
                continue
            count[axis, edge[0]] = count.get((axis, edge[0]), 0) + 1
            axes[axis] = sorted(axes[axis] + [edge[1]])
            widened.append({"chosen": list(best), key: edge[1]})
            log.info("chosen pair (%g, %g) on the edge of the grid: adding %s %g", *best, name, edge[1])
        new = [(w, p) for w in axes[0] for p in axes[1] if (w, p) not in wers]
        if not new:
            return best, widened, results
        res, text, wer = search(new)
        results += res
        hyps.update(text)
        wers.update(wer)
        best = choose_weight(wers)


def choose_weight(wers: dict) -> tuple[float, float]:
    """The (LM weight, penalty) with the lowest WER; ties go to the middle of the tied LM
    weights (an edge of the grid is the least robust choice), then the smallest penalty."""
    low = min(r["wer"] for r in wers.values())
    tied = sorted(w for w, r in wers.items() if r["wer"] == low)
    lmwts = sorted({w for w, _ in tied})
    mid = lmwts[(len(lmwts) - 1) // 2]
    return min(w for w in tied if w[0] == mid)


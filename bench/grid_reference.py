#!/usr/bin/env python3
"""Search errors of the tuning grid, measured against near-exact decodes.

The reference path of every (utterance, grid point) is the cheapest one found by lattice
searches at each LM weight of the grid, with the middle penalty in the graph, a wide beam
(--reference-beam 16) and no max-active, each rescored at every point. Then the decoder's grid
search (one lattice search at the middle LM weight and penalty, max-active as the decoder's)
is run at each --grid-beams value, and each is compared with the reference: WER per point,
and (utterance, point) pairs whose path costs more or less than the reference's (cost: graph
+ penalty x words + acoustic / LMWT). The single passes' WERs of a `bench/grid.py` result (--single, same model
and max-active) are compared with the reference and with each grid search, whose search CPU
is given in those single passes.

    python bench/grid_reference.py [--nnet exp/nnet/member_0 | --gmm exp/tri] [--single bench/results/grid_15000.json]
                                   [--reference-beam 16] [--grid-beams 13 14] [--out bench/results/grid_reference.json]
"""

import json
import multiprocessing
import tempfile
from pathlib import Path

import kaldifst
import numpy as np
import torch

from asrkd.data import read_table
from asrkd.decode.decoder import add_word_penalty, decode
from asrkd.decode.lattice import SearchGraph, lattice_search, warm_up
from asrkd.decode.score import compute_wer
from asrkd.lang import read_symbols
from asrkd.utils import setup_logging
from grid import TOL, against, grid_args, hyps, model_scorer, path_costs

_REF = {}


def _reference_paths(utt: str) -> tuple[str, dict]:
    """{point: (word ids, cost)}: the cheapest path over wide-beam lattices searched at each LM weight."""
    g, weights, p0, beam = _REF["graph"], _REF["weights"], _REF["p0"], _REF["beam"]
    ll, best = _REF["scorer"](utt), {}
    for w0 in sorted({w for w, _ in weights}):
        lat = lattice_search(g, ll / w0, beam)
        if lat is None:
            continue
        paths = lat.best_paths(g, [w0 / w for w, _ in weights], [p - p0 for _, p in weights])
        for (w, p), path in zip(weights, paths):
            k = f"{w:g}_{p:g}"
            if path is not None and (k not in best or path[1] < best[k][1]):
                best[k] = path
    return utt, best


def reference(graph: kaldifst.StdVectorFst, scorer, weights: list, beam: float, nj: int) -> dict:
    """{utt: {point: (word ids, cost)}} of the reference search, utterances spread over `nj` processes."""
    p0 = float(np.median([p for _, p in weights]))
    g = SearchGraph(add_word_penalty(graph, p0))
    warm_up(g, scorer.num_pdfs)
    _REF.update(graph=g, scorer=scorer, weights=weights, p0=p0, beam=beam)
    # a process per few utterances: a wide beam's token arrays are kept for the longest utterance seen;
    # one torch thread, as in the decoder's jobs (torch's thread pool does not survive a fork)
    with multiprocessing.get_context("fork").Pool(nj, torch.set_num_threads, (1,), maxtasksperchild=20) as pool:
        return dict(pool.imap_unordered(_reference_paths, scorer.keys()))


def main() -> None:
    p = grid_args(__doc__, "bench/results/grid_reference.json")
    p.add_argument("--reference-beam", type=float, default=16.0, help="beam of the reference lattice searches")
    p.add_argument("--grid-beams", type=float, nargs="+", default=[13, 14],
                   help="beams of the decoder's lattice search")
    p.add_argument("--single", type=Path, help="bench/grid.py result whose single passes to compare")
    a = p.parse_args()
    setup_logging()
    graph_dir, data = a.recipe_dir / "exp/tri/graph", a.recipe_dir / "data" / a.set
    weights = [(float(w), float(pen)) for w in a.lm_weights for pen in a.penalties]
    single = json.loads(a.single.read_text()) if a.single else None
    refs = read_table(data / "text", allow_empty_value=True)
    words = {i: w for w, i in read_symbols(graph_dir / "words.txt").items()}
    with tempfile.TemporaryDirectory() as tmp:
        scorer = model_scorer(a, Path(tmp))
        ref = reference(kaldifst.StdVectorFst.read(str(graph_dir / "HCLG.fst")), scorer, weights, a.reference_beam,
                        a.nj)
        text = {k: {u: " ".join(words[i] for i in ref[u][k][0]) for u in ref if k in ref[u]}
                for k in (f"{w:g}_{pen:g}" for w, pen in weights)}
        ref_wers = {k: compute_wer(refs, t)["wer"] for k, t in text.items()}
        res = {"model": a.gmm or a.nnet, "set": a.set, "max_active": a.max_active, "reference_beam": a.reference_beam,
               "reference_wers": ref_wers, "grid": {}}
        if single:
            res["single_passes"] = {"from": a.single.name, "max_active": single["max_active"],
                                    **against(single["single_pass_wers"], ref_wers)}
        for beam in a.grid_beams:
            out = Path(tmp) / f"grid_{beam:g}"
            info = decode(graph_dir, scorer, data, out, lm_weights=a.lm_weights, word_ins_penalties=a.penalties,
                          grid_beam=beam, max_active=a.max_active, nj=a.nj, max_widen=0)
            cost = path_costs(out, "lattice")
            res["grid"][f"beam {beam:g}"] = {
                "search_rtf": round(info["search_rtf_per_core"], 4),
                **against(info["wer_per_weight"], ref_wers),
                "wer_diff_per_weight": {k: round(v - ref_wers[k], 2) for k, v in info["wer_per_weight"].items()},
                "path_costlier": sum(c > ref[u][k][1] + TOL for (u, k), c in cost.items()),
                "path_cheaper": sum(c < ref[u][k][1] - TOL for (u, k), c in cost.items()),
                "other_words": sum(h != text[k].get(u) for k in text for u, h in hyps(out, k).items()),
                "choice": f"{info['best_lmwt']:g}_{info['best_wip']:g}"}
            if single:
                cpu = info["search_rtf_per_core"] / single["single_pass_search_rtf"]
                res["grid"][f"beam {beam:g}"].update(
                    search_cpu_in_single_passes=round(cpu, 2),
                    against_single_passes=against(info["wer_per_weight"], single["single_pass_wers"]))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Cost and fidelity of the lattice-rescored tuning grid: one lattice search
over the dev set (at the middle LM weight and penalty, beam 14 or --lattice-beams) rescored at
every (LM weight, insertion penalty), against one FasterDecoder pass (beam 13) per grid point,
both with the decoder's max-active (15000, or --max-active), for a trained model of the recipe.

    python bench/grid.py [--recipe-dir recipes/speechocean762] [--nnet exp/nnet/member_0 | --gmm exp/tri]
                         [--lattice-beams 13 14] [--max-active 15000] [--exact-max-active 1000000]

A neural model's log posteriors are computed once (so every decode times the search only).
Reports, per lattice beam: search CPU relative to one single pass, the largest WER difference
over the grid, whether the chosen pair is the same, and over every (utterance, grid point)
how often the rescored path costs more or less (by > 0.05) than the single pass's (a search
error of one or the other; both costs are graph + penalty x words + acoustic / LMWT) and how
often its words differ. With --exact-max-active N every grid point is also decoded with
max-active N (beam 13: Viterbi within the beam), and both searches' WERs are compared with
those. Writes bench/results/grid.json.
"""

import argparse
import json
import tempfile
from pathlib import Path

from asrkd.data import read_table
from asrkd.decode.decoder import (GRID_BEAM, MAX_ACTIVE, GmmScorer, NnetScorer, PosteriorScorer, choose_weight,
                                  decode, write_log_posteriors)
from asrkd.hmm.alignment import AlignmentDir
from asrkd.utils import setup_logging

ROOT = Path(__file__).resolve().parents[1]
TOL = 0.05  # path costs are logged to 0.01 and summed in float32 by the decoders


def path_costs(decode_dir: Path, search: str) -> dict:
    """{(utt, "lmwt_wip"): best path cost} of one search ("pass" or "lattice") from a decode
    dir's log/decode.log (a grid's dir also holds the pass at its chosen pair)."""
    out = {}
    for line in (decode_dir / "log/decode.log").read_text().splitlines():
        utt, *fields = line.split()
        f = dict(x.split("=") for x in fields)
        if f["search"] == search:
            out[utt, f"{f['lmwt']}_{f['wip']}"] = float(f["cost"])
    return out


def hyps(decode_dir: Path, point: str) -> dict:
    """{utt: words} of one grid point's hypotheses."""
    return read_table(decode_dir / "hyp" / f"{point}.txt", allow_empty_value=True)


def against(wers: dict, exact: dict) -> dict:
    """Largest WER difference from the max-active-lifted decodes, and points within 0.2."""
    diffs = [abs(wers[k] - exact[k]) for k in exact]
    return {"max_abs_wer_diff": round(max(diffs), 2), "points_within_0.2": sum(d <= 0.2 for d in diffs)}


def grid_args(doc: str, out: str) -> argparse.ArgumentParser:
    """The options both grid benches share: recipe, model, set, grid, max-active, jobs, output."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe-dir", type=Path, default=ROOT / "recipes/speechocean762", help="recipe with exp/tri/graph")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--nnet", default="exp/nnet/member_0", help="neural model dir under the recipe")
    g.add_argument("--gmm", help="GMM dir under the recipe (instead of --nnet)")
    p.add_argument("--set", default="dev", help="data dir under <recipe-dir>/data")
    p.add_argument("--lm-weights", type=float, nargs="+", default=[9, 12, 15, 18, 21], help="LM weights of the grid")
    p.add_argument("--penalties", type=float, nargs="+", default=[0, 1, 2], help="word insertion penalties of the grid")
    p.add_argument("--max-active", type=int, default=MAX_ACTIVE, help="max-active of the decoder's searches")
    p.add_argument("--nj", type=int, default=2, help="parallel decoding jobs")
    p.add_argument("--out", type=Path, default=ROOT / out, help="JSON results")
    return p


def model_scorer(a: argparse.Namespace, tmp: Path):
    """The GMM's scorer, or the network's log posteriors computed once into `tmp` (so that
    decodes time the search only)."""
    data = a.recipe_dir / "data" / a.set
    if a.gmm:
        return GmmScorer(a.recipe_dir / a.gmm, data)
    write_log_posteriors(NnetScorer([a.recipe_dir / a.nnet], data), tmp / "post")
    return PosteriorScorer([tmp / "post/logpost.scp"], AlignmentDir(a.recipe_dir / "exp/tri_ali").log_priors)


def main() -> None:
    p = grid_args(__doc__, "bench/results/grid.json")
    p.add_argument("--lattice-beams", type=float, nargs="+", default=[GRID_BEAM],
                   help="search beams of the lattice pass")
    p.add_argument("--exact-max-active", type=int, default=0, help="also decode each point with this max-active")
    a = p.parse_args()
    setup_logging()
    graph, data = a.recipe_dir / "exp/tri/graph", a.recipe_dir / "data" / a.set
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scorer = model_scorer(a, tmp)
        single, single_cpu, single_cost, single_hyp, exact = {}, [], {}, {}, {}
        for w in a.lm_weights:
            for pen in a.penalties:
                k, one_dir = f"{w:g}_{pen:g}", tmp / f"single_{w:g}_{pen:g}"
                info = decode(graph, scorer, data, one_dir, lm_weights=[w], word_ins_penalties=[pen],
                              max_active=a.max_active, nj=a.nj)
                single[k] = info["wer"]
                single_cpu.append(info["search_rtf_per_core"])
                single_cost.update(path_costs(one_dir, "pass"))
                single_hyp[k] = hyps(one_dir, k)
                if a.exact_max_active:
                    exact[k] = decode(graph, scorer, data, tmp / f"exact_{k}", lm_weights=[w],
                                      word_ins_penalties=[pen], max_active=a.exact_max_active, nj=a.nj)["wer"]
        one_pass = sum(single_cpu) / len(single_cpu)
        res = {"model": a.gmm or a.nnet, "set": a.set, "max_active": a.max_active,
               "single_pass_search_rtf": round(one_pass, 4), "single_pass_wers": single,
               **({"exact_max_active": a.exact_max_active, "exact_wers": exact,
                   "single_pass_vs_exact": against(single, exact)} if exact else {}),
               "single_pass_choice": "_".join(f"{x:g}" for x in choose_weight(
                   {tuple(map(float, k.split("_"))): {"wer": v} for k, v in single.items()})), "lattice": {}}
        for beam in a.lattice_beams:
            lat_dir = tmp / f"lattice_{beam:g}"
            info = decode(graph, scorer, data, lat_dir, lm_weights=a.lm_weights,
                          word_ins_penalties=a.penalties, grid_beam=beam, max_active=a.max_active, nj=a.nj,
                          max_widen=0)  # the grid as given: compared point by point
            diffs = {k: round(v - single[k], 2) for k, v in info["wer_per_weight"].items()}
            cost = path_costs(lat_dir, "lattice")
            both = [x for x in cost if x in single_cost]
            other_words = sum(h != single_hyp[k].get(u) for k in single for u, h in hyps(lat_dir, k).items())
            res["lattice"][f"beam {beam:g}"] = {
                "search_rtf": round(info["search_rtf_per_core"], 4),
                "single_passes": round(info["search_rtf_per_core"] / one_pass, 2),
                "max_abs_wer_diff": max(abs(d) for d in diffs.values()), "wer_diff_per_weight": diffs,
                "choice": f"{info['best_lmwt']:g}_{info['best_wip']:g}",
                "utterance_points": len(both),
                "lattice_path_costlier": sum(cost[x] > single_cost[x] + TOL for x in both),
                "lattice_path_cheaper": sum(cost[x] < single_cost[x] - TOL for x in both),
                "other_words": other_words}
            if exact:
                res["lattice"][f"beam {beam:g}"]["vs_exact"] = against(info["wer_per_weight"], exact)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "single_pass_wers"}, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Cost and fidelity of the lattice-rescored tuning grid (issue #13 item 6): one lattice pass
over the dev set rescored at every (LM weight, insertion penalty), against one FasterDecoder
pass (beam 13, max-active 7000) per grid point, for a trained model of the recipe.

    python bench/grid.py [--recipe-dir recipes/speechocean762] [--nnet exp/nnet/member_0 | --gmm exp/tri]
                         [--lattice-beams 9 10]

A neural model's log posteriors are computed once (so every decode times the search only).
Reports, per lattice beam: search CPU relative to one single pass, the largest WER difference
over the grid, and whether the chosen pair is the same. Writes bench/results/grid.json.
"""

import argparse
import json
import tempfile
from pathlib import Path

from asrkd.alignment import AlignmentDir
from asrkd.decode.decoder import GmmScorer, NnetScorer, PosteriorScorer, choose_weight, decode, write_log_posteriors
from asrkd.utils import setup_logging

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe-dir", type=Path, default=ROOT / "recipes/speechocean762")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--nnet", default="exp/nnet/member_0")
    g.add_argument("--gmm")
    p.add_argument("--set", default="dev")
    p.add_argument("--lm-weights", type=float, nargs="+", default=[9, 12, 15, 18, 21])
    p.add_argument("--penalties", type=float, nargs="+", default=[0, 1, 2])
    p.add_argument("--lattice-beams", type=float, nargs="+", default=[9, 10])
    p.add_argument("--lattice-beam", type=float, default=6.0, help="lattice pruning beam")
    p.add_argument("--nj", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/grid.json")
    a = p.parse_args()
    setup_logging()
    r = a.recipe_dir
    graph, data = r / "exp/tri/graph", r / "data" / a.set
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.gmm:
            scorer = GmmScorer(r / a.gmm, data)
        else:
            write_log_posteriors(NnetScorer([r / a.nnet], data), tmp / "post")
            scorer = PosteriorScorer([tmp / "post/logpost.scp"], AlignmentDir(r / "exp/tri_ali").log_priors)
        single, single_cpu = {}, []
        for w in a.lm_weights:
            for pen in a.penalties:
                info = decode(graph, scorer, data, tmp / f"single_{w:g}_{pen:g}", lm_weights=[w],
                              word_ins_penalties=[pen], nj=a.nj)
                single[f"{w:g}_{pen:g}"] = info["wer"]
                single_cpu.append(info["search_rtf_per_core"])
        one_pass = sum(single_cpu) / len(single_cpu)
        res = {"model": a.gmm or a.nnet, "set": a.set, "single_pass_search_rtf": round(one_pass, 4),
               "single_pass_wers": single,
               "single_pass_choice": "_".join(f"{x:g}" for x in choose_weight(
                   {tuple(map(float, k.split("_"))): {"wer": v} for k, v in single.items()})), "lattice": {}}
        for beam in a.lattice_beams:
            info = decode(graph, scorer, data, tmp / f"lattice_{beam:g}", lm_weights=a.lm_weights,
                          word_ins_penalties=a.penalties, grid_beam=beam, lattice_beam=a.lattice_beam, nj=a.nj)
            diffs = {k: round(v - single[k], 2) for k, v in info["wer_per_weight"].items()}
            res["lattice"][f"beam {beam:g}"] = {
                "search_rtf": round(info["search_rtf_per_core"], 4),
                "single_passes": round(info["search_rtf_per_core"] / one_pass, 2),
                "max_abs_wer_diff": max(abs(d) for d in diffs.values()), "wer_diff_per_weight": diffs,
                "choice": f"{info['best_lmwt']:g}_{info['best_wip']:g}"}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k != "single_pass_wers"}, indent=2))


if __name__ == "__main__":
    main()

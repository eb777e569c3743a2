#!/usr/bin/env python3
"""Decoding benchmark: HCLG build time and size; real-time factor per core and WER of the
test set against the beam (the speed/accuracy curve), at the LM weight chosen on dev.

    bash recipes/speechocean762/run.sh --stop-stage 9    # models, graphs, dev decodes
    python bench/decode.py [--recipe-dir recipes/speechocean762] [--beams 8 10 11 12 13 16 20]

Two acoustic inputs are timed: the tri GMM (likelihoods computed on the fly) and a table
of log posteriors read from disk, which is how a neural model's outputs reach the decoder
(here the tri GMM's own normalised posteriors, so only the search cost is measured).
The neural models' share is their forward pass over the test set (SenoneDnn, 26 spliced
frames, one thread), timed for the paper's 8x2560 network and smaller ones; its cost does
not depend on the weights, so untrained networks are timed, and a neural decode's RTF is
reported as forward pass + the posterior-table search at beam 13.
Writes JSON (default bench/results/decode.json). RTF per core = decoding CPU s / audio s,
summed over the jobs, one thread each.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import kaldiio
import numpy as np
import torch

from asrkd.decode.decoder import MAX_ACTIVE, GmmScorer, PosteriorScorer, decode
from asrkd.decode.graph import make_graph
from asrkd.features import FeatureReader
from asrkd.nnet.model import SenoneDnn
from asrkd.utils import setup_logging

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe-dir", type=Path, default=ROOT / "recipes/speechocean762", help="recipe with stages 0-9 done")
    p.add_argument("--model", default="tri", help="GMM dir under <recipe-dir>/exp")
    p.add_argument("--beams", type=float, nargs="+", default=[8, 10, 11, 12, 13, 16, 20], help="beams of the GMM decodes")
    p.add_argument("--posterior-beams", type=float, nargs="+", default=[10, 13],
                   help="beams of the posterior-table decodes")
    p.add_argument("--max-actives", type=int, nargs="+", default=[4000],
                   help="also decode with the GMM at beam 13 and these max-active limits")
    p.add_argument("--nnet-sizes", nargs="+", default=["2560x8", "1024x4", "512x4"],
                   help="hidden units x layers of the DNNs whose forward pass is timed")
    p.add_argument("--nj", type=int, default=2, help="parallel jobs (RTF is per core: CPU s / audio s)")
    p.add_argument("--max-active", type=int, default=MAX_ACTIVE, help="max-active of the beam sweeps")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/decode.json", help="JSON results")
    a = p.parse_args()
    setup_logging()
    torch.set_num_threads(1)
    r, model = a.recipe_dir, a.recipe_dir / "exp" / a.model
    test, dev_decode = r / "data/test", model / "decode_dev"
    result = {"model": a.model, "data": str(test.relative_to(ROOT)), "max_active": a.max_active,
              "cpus": os.cpu_count(), "nj": a.nj, "torch_threads": 1}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result["graph"] = make_graph(r / "data/lang_test", model, tmp / "graph")
        gmm = GmmScorer(model, test)
        posts = {u: (ll - np.logaddexp.reduce(ll, axis=1, keepdims=True)) for u in gmm.keys()
                 for ll in [gmm(u).astype(np.float64)]}
        kaldiio.save_ark(str(tmp / "post.ark"), {u: v.astype(np.float32) for u, v in posts.items()},
                         scp=str(tmp / "post.scp"))
        uniform = np.zeros(gmm.num_pdfs, dtype=np.float32)  # log of equal (unnormalised) priors
        scorers = {"gmm": gmm, "posteriors": PosteriorScorer([tmp / "post.scp"], uniform)}
        for name, scorer in scorers.items():
            curve = []
            for beam in a.beams if name == "gmm" else a.posterior_beams:
                info = decode(tmp / "graph", scorer, test, tmp / f"{name}_b{beam:g}", tuned_on=dev_decode,
                              beam=beam, max_active=a.max_active, nj=a.nj)
                curve.append({"beam": beam, "wer": round(info["wer"], 2), "rtf_per_core": round(info["rtf_per_core"], 4),
                              "search_rtf_per_core": round(info["search_rtf_per_core"], 4)})
            result[name] = curve
        result["gmm_max_active"] = []
        for m in a.max_actives:
            info = decode(tmp / "graph", gmm, test, tmp / f"gmm_m{m}", tuned_on=dev_decode, beam=13.0,
                          max_active=m, nj=a.nj)
            result["gmm_max_active"].append({"beam": 13.0, "max_active": m, "wer": round(info["wer"], 2),
                                             "rtf_per_core": round(info["rtf_per_core"], 4)})
        result["lm_weight"], result["word_ins_penalty"] = info["best_lmwt"], info["best_wip"]
        result["audio_seconds"] = info["audio_seconds"]
    search_b13 = next(c["rtf_per_core"] for c in result["posteriors"] if c["beam"] == 13)
    reader = FeatureReader(test)
    feats = [reader[u] for u in gmm.keys()]
    result["nnet"] = []
    for size in a.nnet_sizes:
        hidden, layers = map(int, size.split("x"))
        torch.manual_seed(0)
        net = SenoneDnn(feats[0].shape[1], gmm.num_pdfs, hidden=hidden, layers=layers).eval()
        t0 = time.process_time()
        for x in feats:
            net.log_posteriors(x)
        forward = (time.process_time() - t0) / result["audio_seconds"]
        result["nnet"].append({"hidden": hidden, "layers": layers, "params": net.num_params(),
                               "forward_rtf_per_core": round(forward, 4),
                               "decode_rtf_per_core_beam13": round(forward + search_b13, 4)})
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

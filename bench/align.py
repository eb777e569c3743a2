#!/usr/bin/env python3
"""GMM-HMM benchmark: wall time of mono + tri training and alignment on the shipped 2 h
train set, GMM log-likelihood evaluation speed, peak memory.

    bash recipes/speechocean762/run.sh --stop-stage 3     # data, lang, features
    python bench/align.py [--recipe-dir recipes/speechocean762]

Trains into a fresh directory (default <recipe>/exp/bench_align) with the recipe's
settings and writes JSON (default bench/results/align.json).
"""

import argparse
import json
import os
import platform
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from asrkd.hmm.align import align, load_model, model_features
from asrkd.features import FeatureReader
from asrkd.hmm.train import train_mono, train_tri
from asrkd.utils import setup_logging

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def loglik_speed(model_dir: Path, data_dir: Path, frames: int = 50000) -> dict:
    """Frames per second of [T, num_pdfs] GMM log-likelihoods, with 1 thread and all threads."""
    gmm, tree = load_model(model_dir)
    features = model_features(model_dir)
    reader = FeatureReader(data_dir, cmvn=True)
    x, n = [], 0
    for utt in reader.keys():
        x.append(features(reader[utt]))
        n += len(x[-1])
        if n >= frames:
            break
    x = np.concatenate(x)[:frames]
    out = {"num_pdfs": tree.num_pdfs, "num_gauss": gmm.num_gauss(), "frames": len(x)}
    threads = torch.get_num_threads()
    for t in sorted({1, threads}):
        torch.set_num_threads(t)
        t0 = time.perf_counter()
        gmm.loglik(x)
        out[f"frames_per_s_{t}_threads"] = round(len(x) / (time.perf_counter() - t0))
    torch.set_num_threads(threads)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe-dir", type=Path, default=ROOT / "recipes/speechocean762", help="recipe with stages 0-3 done")
    p.add_argument("--exp-dir", type=Path, help="default: <recipe-dir>/exp/bench_align (replaced)")
    p.add_argument("--num-leaves", type=int, default=1500, help="tied triphone states")
    p.add_argument("--tri-gauss", type=int, default=8000, help="Gaussians of the triphone model")
    p.add_argument("--mono-gauss", type=int, default=1000, help="Gaussians of the monophone model")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/align.json", help="JSON results")
    a = p.parse_args()
    setup_logging()
    data, lang = a.recipe_dir / "data/train", a.recipe_dir / "data/lang"
    exp = a.exp_dir or a.recipe_dir / "exp/bench_align"
    if exp.exists():
        shutil.rmtree(exp)
    steps = {}

    def timed(name, fn, *args, **kw):
        t0 = time.perf_counter()
        result = fn(*args, **kw)
        steps[name] = {"wall_s": round(time.perf_counter() - t0, 1), "peak_rss_mb": peak_rss_mb()}
        return result

    timed("train_mono", train_mono, data, lang, exp / "mono", tot_gauss=a.mono_gauss)
    mono = timed("align_mono", align, data, lang, exp / "mono", exp / "mono_ali")
    timed("train_tri", train_tri, data, lang, exp / "mono_ali", exp / "tri", num_leaves=a.num_leaves,
          tot_gauss=a.tri_gauss)
    tri = timed("align_tri", align, data, lang, exp / "tri", exp / "tri_ali")
    total = sum(s["wall_s"] for s in steps.values())
    result = {
        "data": str(data.relative_to(ROOT)), "frames": tri["frames"], "audio_hours": round(tri["frames"] / 360000, 3),
        "steps": steps, "total_wall_s": round(total, 1), "total_minutes": round(total / 60, 2),
        "mono": {k: mono[k] for k in ("aligned", "failed", "avg_loglik_per_frame", "pdfs_seen")},
        "tri": {k: tri[k] for k in ("aligned", "failed", "avg_loglik_per_frame", "num_pdfs", "pdfs_seen",
                                    "senone_occupancy_histogram")},
        "gmm_loglik": loglik_speed(exp / "tri", data),
        "peak_rss_mb": peak_rss_mb(),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__},
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

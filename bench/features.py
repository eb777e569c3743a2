#!/usr/bin/env python3
"""Feature extraction benchmark: real-time factor per core and peak memory on a data set.

    python bench/features.py [--corpus-dir ../shared/data/speechocean762] [--split train] [--nj 1 2]

Writes JSON (default bench/results/features.json). RTF per core = wall seconds x jobs / audio seconds.
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from asrkd.data import read_table
from asrkd.config import load_config
from asrkd.features import FbankConfig, compute_fbank_dir, compute_cmvn_stats_dir

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--corpus-dir", type=Path, default=ROOT.parent / "shared/data/speechocean762",
                   help="speechocean762 corpus")
    p.add_argument("--split", default="train", help="corpus split to extract")
    p.add_argument("--nj", type=int, nargs="+", default=[1, 2], help="numbers of parallel jobs to time")
    p.add_argument("--config", default=ROOT / "recipes/speechocean762/conf/fbank.yaml", help="fbank config")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/features.json", help="JSON results")
    a = p.parse_args()
    cfg = load_config(FbankConfig, a.config)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(ROOT / "local/prepare_speechocean762.py"), str(a.corpus_dir), tmp],
                       check=True, capture_output=True)
        src = Path(tmp) / a.split
        for nj in a.nj:
            d = Path(tmp) / f"{a.split}_nj{nj}"
            d.mkdir()
            for name in ("wav.scp", "text", "utt2spk", "spk2utt"):
                (d / name).write_text((src / name).read_text())
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            summary = compute_fbank_dir(d, cfg, nj=nj)
            wall = time.perf_counter() - t0
            cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t1 = time.perf_counter()
            compute_cmvn_stats_dir(d)
            cmvn_wall = time.perf_counter() - t1
            audio = sum(float(v) for v in read_table(d / "utt2dur").values())
            cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
            runs.append({
                "nj": nj, "utterances": summary["utterances"], "frames": summary["frames"],
                "audio_hours": round(audio / 3600, 3), "wall_s": round(wall, 2),
                "rtf_per_core": round(wall * nj / audio, 5), "cpu_rtf": round(cpu / audio, 5),
                "frames_per_s": round(summary["frames"] / wall), "cmvn_wall_s": round(cmvn_wall, 2),
                "peak_rss_mb_worker": round(cpu1.ru_maxrss / 1024, 1),
            })
            print(json.dumps(runs[-1]))
    result = {
        "benchmark": "features", "corpus": str(a.corpus_dir.name), "split": a.split,
        "config": str(Path(a.config).relative_to(ROOT)) if Path(a.config).is_relative_to(ROOT) else str(a.config),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                    "processor": platform.machine()},
        "peak_rss_mb_main": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "runs": runs,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

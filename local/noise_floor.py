#!/usr/bin/env python3
"""Per-recording noise floor of a data dir: the 10th percentile of 25 ms frame energies in
dBFS, ignoring digital silence (frames below -80 dBFS), and the share of digital silence.
Used to set a recipe's dither level from its training data (see recipes/yesno/conf/fbank.yaml);
a dither of standard deviation s (16-bit units) is white noise at 20*log10(s/32768) dBFS.
Usage: noise_floor.py DATA_DIR [OUT_JSON]"""

import argparse
import json
import sys

import numpy as np

from asrkd.audio import read_audio
from asrkd.data import read_table

DIGITAL_SILENCE_DB = -80.0


def frame_energies_db(x: np.ndarray, sr: int, frame_ms: float = 25.0) -> np.ndarray:
    n = int(sr * frame_ms / 1000)
    frames = x[: len(x) // n * n].reshape(-1, n).astype(np.float64)
    return 10 * np.log10((frames**2).mean(1) + 1e-12)  # samples in [-1, 1]: 0 dBFS is full scale


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", help="Kaldi data dir with wav.scp")
    p.add_argument("out_json", nargs="?", help="also write the summary and the per-recording figures here")
    a = p.parse_args()
    rows = {}
    for utt, spec in read_table(f"{a.data_dir}/wav.scp").items():
        x, sr = read_audio(spec)
        e = frame_energies_db(x, sr)
        live = e[e > DIGITAL_SILENCE_DB]
        rows[utt] = {"floor_db": round(float(np.percentile(live, 10)), 1) if len(live) else None,
                     "digital_silence": round(float((e <= DIGITAL_SILENCE_DB).mean()), 3)}
    floors = np.array([r["floor_db"] for r in rows.values() if r["floor_db"] is not None])
    if not len(floors):
        sys.exit(f"noise_floor: no audible frames in {a.data_dir}")
    summary = {"recordings": len(rows), "floor_db_median": round(float(np.median(floors)), 1),
               "floor_db_max": round(float(floors.max()), 1),
               "with_digital_silence": sorted(u for u, r in rows.items() if r["digital_silence"] > 0)}
    print(json.dumps(summary, indent=1))
    if a.out_json:
        with open(a.out_json, "w") as f:
            json.dump({"summary": summary, "recordings": rows}, f, indent=1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Kaldi data dirs and lexicon for the yes/no corpus (OpenSLR 1), split as Kaldi's egs/yesno does:
the first half of the sorted files is train_yesno, the rest test_yesno. Each file name is its
transcript (1=YES, 0=NO).
Usage: prepare_yesno.py WAVES_DIR data/"""

import argparse
import logging
import sys
from pathlib import Path

from asrkd.data import write_data_dir
from asrkd.utils import setup_logging, write_list

log = logging.getLogger("prepare_yesno")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("waves_dir", type=Path, help="the yesno corpus' waves_yesno folder")
    p.add_argument("data_dir", type=Path, help="where train_yesno/, test_yesno/ and local/dict/lexicon.txt go")
    a = p.parse_args()
    setup_logging()
    wavs = sorted(a.waves_dir.glob("*.wav"))
    if not wavs:
        sys.exit(f"prepare_yesno: no .wav files in {a.waves_dir}")
    half = len(wavs) // 2
    splits = {"train_yesno": wavs[:half], "test_yesno": wavs[half:]}
    for name, files in splits.items():
        wav_scp, text, utt2spk = {}, {}, {}
        for f in files:
            labels = f.stem.split("_")
            if not all(x in ("0", "1") for x in labels):
                sys.exit(f"prepare_yesno: {f}: file name is not a 0/1 transcript")
            wav_scp[f.stem] = str(f.resolve())
            text[f.stem] = " ".join("YES" if x == "1" else "NO" for x in labels)
            utt2spk[f.stem] = "global"
        write_data_dir(a.data_dir / name, wav_scp, text, utt2spk)
        log.info("%s: %d utterances", name, len(files))
    write_list(a.data_dir / "local" / "dict" / "lexicon.txt", ["YES Y", "NO N"])


if __name__ == "__main__":
    main()

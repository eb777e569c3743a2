#!/usr/bin/env python3
"""Kaldi data dirs from speechocean762: the shipped FLAC subset (train/dev/test) or the full
OpenSLR-101 download (WAV, train/test). Usage: prepare_speechocean762.py CORPUS_DIR data/"""

import argparse
import logging
import sys
from pathlib import Path

from asrkd.data import read_table, write_data_dir
from asrkd.utils import AsrkdError, setup_logging, write_list

log = logging.getLogger("prepare_speechocean762")


def prepare_split(corpus: Path, split: str, out: Path) -> None:
    src = corpus / split
    wav = read_table(src / "wav.scp")
    text = read_table(src / "text", allow_empty_value=True)
    utt2spk = read_table(src / "utt2spk")
    spk2gender, spk2age = (read_table(src / n) if (src / n).is_file() else None for n in ("spk2gender", "spk2age"))
    wav_scp, texts, spks, skipped = {}, {}, {}, []
    for utt, rel in wav.items():
        path = (corpus / rel).resolve()
        words = " ".join(text.get(utt, "").upper().split())
        reason = ("no audio file" if not path.is_file() else "no transcript" if not words
                  else "no speaker" if utt not in utt2spk else None)
        if reason:
            skipped.append(f"{utt} {reason}")
            continue
        wav_scp[utt], texts[utt], spks[utt] = str(path), words, utt2spk[utt]
    write_data_dir(out, wav_scp, texts, spks, spk2gender, spk2age)
    write_list(out / "log" / "prepare_skipped.txt", skipped)
    if skipped:
        log.warning("%s: skipped %d utterances (listed in %s)", split, len(skipped), out / "log/prepare_skipped.txt")
    log.info("%s: %d utterances, %d speakers -> %s", split, len(wav_scp), len(set(spks.values())), out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("corpus_dir", type=Path, help="corpus with <split>/wav.scp for train, dev, test")
    p.add_argument("data_dir", type=Path, help="where the data dirs <split>/ are written")
    a = p.parse_args()
    setup_logging()
    splits = [s for s in ("train", "dev", "test") if (a.corpus_dir / s / "wav.scp").is_file()]
    if not splits:
        sys.exit(f"prepare_speechocean762: no <split>/wav.scp under {a.corpus_dir}")
    try:
        for split in splits:
            prepare_split(a.corpus_dir, split, a.data_dir / split)
    except AsrkdError as e:
        sys.exit(f"prepare_speechocean762: {e}")


if __name__ == "__main__":
    main()

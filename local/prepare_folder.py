#!/usr/bin/env python3
"""A Kaldi data dir from any folder tree of audio files (wav/flac, any rate, mono or stereo),
each with a same-stem .txt transcript. The speaker is the parent folder's name unless --spk.
Usage: prepare_folder.py AUDIO_DIR data/<name> [--spk NAME]"""

import argparse
import logging
import re
import sys
from pathlib import Path

from asrkd.data import write_data_dir
from asrkd.utils import setup_logging, write_list

log = logging.getLogger("prepare_folder")
AUDIO_EXTS = {".wav", ".flac"}


def normalize(text: str) -> str:
    """Upper-case words; punctuation other than apostrophes and hyphens becomes a space."""
    return " ".join(re.sub(r"[^\w'\- ]", " ", text.upper().replace("\t", " ")).split())


def safe_id(s: str) -> str:
    return re.sub(r"[^\w.\-]", "_", s)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("audio_dir", type=Path, help="folder tree of audio files with .txt transcripts")
    p.add_argument("data_dir", type=Path, help="Kaldi data dir to write")
    p.add_argument("--spk", help="one speaker id for every file")
    a = p.parse_args()
    setup_logging()
    files = sorted(f for f in a.audio_dir.rglob("*") if f.suffix.lower() in AUDIO_EXTS and f.is_file())
    if not files:
        sys.exit(f"prepare_folder: no .wav/.flac files under {a.audio_dir}")
    wav_scp, text, utt2spk, skipped = {}, {}, {}, []
    for f in files:
        spk = safe_id(a.spk or f.parent.name)
        rel = f.relative_to(a.audio_dir).with_suffix("")
        utt = safe_id("-".join(rel.parts))
        utt = utt if utt.startswith(f"{spk}-") else f"{spk}-{utt}"  # Kaldi: speaker id prefixes utt id
        txt = f.with_suffix(".txt")
        words = normalize(txt.read_text(encoding="utf-8", errors="replace")) if txt.is_file() else None
        if words is None or not words:
            skipped.append(f"{f} {'no transcript ' + txt.name if words is None else 'empty transcript'}")
            continue
        if utt in wav_scp:
            sys.exit(f"prepare_folder: {f}: utterance id '{utt}' is not unique")
        wav_scp[utt], text[utt], utt2spk[utt] = str(f.resolve()), words, spk
    if not wav_scp:
        sys.exit(f"prepare_folder: no usable audio/transcript pairs under {a.audio_dir}")
    write_data_dir(a.data_dir, wav_scp, text, utt2spk)
    write_list(a.data_dir / "log" / "prepare_skipped.txt", skipped)
    if skipped:
        log.warning("skipped %d files (listed in %s)", len(skipped), a.data_dir / "log/prepare_skipped.txt")
    log.info("%s: %d utterances, %d speakers", a.data_dir, len(wav_scp), len(set(utt2spk.values())))


if __name__ == "__main__":
    main()

"""Shared fixtures: small data dirs built from the real corpora in ../shared/data."""

import subprocess
import sys
from pathlib import Path

import pytest

from asrkd.data import read_table, write_data_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SO762 = SHARED / "speechocean762"
YESNO = SHARED / "yesno" / "waves_yesno"

if not SO762.is_dir() or not YESNO.is_dir():
    pytest.exit(f"test data not found under {SHARED}", returncode=1)


def run_script(*args: str) -> subprocess.CompletedProcess:
    """Run a local/ script or the asrkd CLI the way a recipe does; fail loudly with its output."""
    cmd = [sys.executable, *args] if args[0].endswith(".py") else [sys.executable, "-m", "asrkd.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    return proc


def so762_subset(out: Path, split: str = "train", speakers: int = 2, per_spk: int = 3) -> Path:
    """A data dir with the first `per_spk` utterances of the first `speakers` speakers."""
    src = SO762 / split
    spk2utt = read_table(src / "spk2utt")
    wav, text = read_table(src / "wav.scp"), read_table(src / "text")
    utts = [u for spk in list(spk2utt)[:speakers] for u in spk2utt[spk].split()[:per_spk]]
    utt2spk = read_table(src / "utt2spk")
    write_data_dir(out, {u: str((SO762 / wav[u]).resolve()) for u in utts},
                   {u: text[u] for u in utts}, {u: utt2spk[u] for u in utts})
    return out


@pytest.fixture
def small_dir(tmp_path) -> Path:
    return so762_subset(tmp_path / "small")

"""Shared fixtures: small data dirs built from the real corpora in ../shared/data."""

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from asrkd.data import read_table, write_data_dir

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SO762 = SHARED / "speechocean762"
YESNO = SHARED / "yesno" / "waves_yesno"

if not SO762.is_dir() or not YESNO.is_dir():
    pytest.exit(f"test data not found under {SHARED}", returncode=1)

# One thread per process where the suite runs on several pytest-xdist workers (a worker per
# core): processes that each take every core slow each other down several times (OpenMP
# spin-waits), and the recipes' --threads default follows OMP_NUM_THREADS.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# The suite runs on pytest-xdist's workers (tools/test.sh: -n auto --dist loadgroup). The longest
# tests go first, so that the workers finish together; the tests on the one-node Slurm share
# one worker, and with it one cluster, and the template's run joins them to even out two workers
# (the yesno recipe's run, about as long, goes to the other).
LONGEST = ("test_slurm_recipe.py", "test_recipe.py", "test_template.py", "test_reproducible.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()) or item.name == "test_template_on_yesno":
            item.add_marker(pytest.mark.xdist_group("slurm"))
    items.sort(key=lambda item: LONGEST.index(item.path.name) if item.path.name in LONGEST else len(LONGEST))


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


def so762_prepared(d: Path, speakers: int, per_spk: int) -> Path:
    """d/train (a `so762_subset` of train) with fbank + CMVN, and d/lang from its words."""
    from asrkd.features import FbankConfig, compute_cmvn_stats_dir, compute_fbank_dir
    from asrkd.lang import build_lexicon, prepare_lang

    data = so762_subset(d / "train", "train", speakers=speakers, per_spk=per_spk)
    compute_fbank_dir(data, FbankConfig(dither=0.0), nj=2)
    compute_cmvn_stats_dir(data)
    lexicon, _ = build_lexicon(SO762 / "resource/lexicon.txt", [data / "text"], use_cmudict=False)
    prepare_lang(lexicon, d / "lang")
    return d


@pytest.fixture
def small_dir(tmp_path) -> Path:
    return so762_subset(tmp_path / "small")


@pytest.fixture(scope="session")
def yesno(tmp_path_factory) -> Path:
    """yesno prepared to the point of GMM training: data dirs with fbank+CMVN, lang, lang_test."""
    from asrkd.features import FbankConfig, compute_cmvn_stats_dir, compute_fbank_dir
    from asrkd.lang import build_lexicon, prepare_lang
    from asrkd.lm import make_lang_test, train_lm

    d = tmp_path_factory.mktemp("yesno")
    subprocess.run([sys.executable, str(ROOT / "local/prepare_yesno.py"), str(YESNO), str(d)], check=True)
    lexicon, _ = build_lexicon(d / "local/dict/lexicon.txt", use_cmudict=False)
    prepare_lang(lexicon, d / "lang")
    train_lm(d / "train_yesno/text", d / "lang", d / "lm", order=1)
    make_lang_test(d / "lang", next((d / "lm").glob("*.arpa*")), d / "lang_test")
    for s in ("train_yesno", "test_yesno"):
        compute_fbank_dir(d / s, FbankConfig(sample_frequency=8000, dither=0.0), nj=2)
        compute_cmvn_stats_dir(d / s)
    return d


@pytest.fixture(scope="session")
def yesno_mono(yesno) -> Path:
    """A flat-start monophone system on yesno and its alignment (exp/mono, exp/mono_ali)."""
    from asrkd.hmm.align import align
    from asrkd.hmm.train import train_mono

    train_mono(yesno / "train_yesno", yesno / "lang", yesno / "exp/mono", num_iters=15, tot_gauss=100)
    align(yesno / "train_yesno", yesno / "lang", yesno / "exp/mono", yesno / "exp/mono_ali")
    return yesno / "exp"


@contextmanager
def one_thread():
    """torch on one thread (OMP_NUM_THREADS=1), as each torchrun rank has; restored after."""
    import torch

    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        os.environ.pop("OMP_NUM_THREADS")
        if omp is not None:
            os.environ["OMP_NUM_THREADS"] = omp
        torch.set_num_threads(threads)

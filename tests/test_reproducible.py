"""The GMM stages give the same bits with 1 or 2 threads and with every numeric library held
to AVX2 kernels, as a stand-in for another x86-64 CPU: models, trees, training histories,
alignments and decodes of mono, tri, the LDA+MLLT tri2 and the SAT tri3 (with its fMLLR
transforms), on yesno and on a speechocean762 slice."""

import json
import os
import subprocess
import sys

import pytest

from asrkd.lm import make_lang_test, train_lm
from conftest import ROOT, so762_prepared

HASWELL = ("+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fxsr,+lzcnt,+mmx,+movbe,+popcnt,+sse,+sse2,+sse3,"
           "+sse4.1,+sse4.2,+ssse3,+xsave")
AVX2 = {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": HASWELL, "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell",
        "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"}
# Both at once: the thread count and the kernels each change, so identical prints show that
# neither matters (a failure names the outputs; rerun the settings apart to tell which one).
SETTINGS = {
    "2 threads, this CPU's kernels": {"OMP_NUM_THREADS": "2"},
    "1 thread, AVX2 kernels": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **AVX2},
}


@pytest.fixture(scope="module")
def so762_small(tmp_path_factory):
    """60 utterances (4 speakers) of speechocean762 train with features, lang and a bigram lang_test."""
    d = so762_prepared(tmp_path_factory.mktemp("so762_small"), speakers=4, per_spk=15)
    train_lm(d / "train/text", d / "lang", d / "lm", order=2)
    make_lang_test(d / "lang", next((d / "lm").glob("*.arpa*")), d / "lang_test")
    return d


def run_stages(yesno, so762, out, setting: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in AVX2 and k != "NUMBA_NUM_THREADS"}
    proc = subprocess.run([sys.executable, str(ROOT / "tests/gmm_stages.py"), str(yesno), str(so762), str(out)],
                          capture_output=True, text=True, cwd=ROOT, env={**env, **setting})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_gmm_stages_are_bit_reproducible(yesno, so762_small, tmp_path):
    prints = {name: run_stages(yesno, so762_small, tmp_path / name.replace(" ", "_"), setting)
              for name, setting in SETTINGS.items()}
    first = prints["2 threads, this CPU's kernels"]
    assert len(first) == 16 and len(first['so762 tri2']) == 4  # params, tree, transform, history
    assert len(first['so762 tri3']) == 6  # and the alignment model and the training speakers' transforms
    for name, fp in prints.items():
        differ = [k for k in first if fp[k] != first[k]]
        assert not differ, f"{name}: differs from 2 threads with this CPU's kernels in {differ}"

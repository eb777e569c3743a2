"""The corpus template (recipes/template/run.sh) end to end on yesno, with its data preparation
given as --prep, the beyond-the-paper stages switched off, and the networks on the SAT
system's senones of the training set and its speed-perturbed copies; and its default preparation
(local/prepare.sh) on a folder of audio with same-stem transcripts."""

import json
import os
import shutil
import subprocess
import sys

import kaldiio

from asrkd.data import read_table, validate_data_dir
from conftest import ROOT, YESNO
from test_recipe import run_recipe

TINY_NNET = """\
hidden: 64
layers: 2
dropout: 0.1
batch_size: 128
max_epochs: 3
num_members: 2
temperatures: [2.0]
temperature: 2.0
top_k: 5
"""


def copy_template(tmp, name="template"):
    for part in ("recipes/utils", "local"):
        if not (tmp / part).exists():
            shutil.copytree(ROOT / part, tmp / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "recipes/template", tmp / "recipes" / name,
                    ignore=shutil.ignore_patterns("data", "exp", "__pycache__"))
    return tmp / "recipes" / name


def run_asrkd(recipe, *args):
    return subprocess.run([os.path.join(sys.prefix, "bin", "asrkd"), *args], capture_output=True, text=True,
                          cwd=recipe)


def test_template_on_yesno(tmp_path):
    recipe = copy_template(tmp_path)
    (tmp_path / "nnet.yaml").write_text(TINY_NNET)
    proc = run_recipe(
        recipe, "--corpus-dir", str(YESNO), "--prep", "python ../../local/prepare_yesno.py",
        "--train-set", "train_yesno", "--tune-set", "train_yesno", "--test-set", "test_yesno",
        "--lang-opts", "--no-cmudict", "--lm-order", "1", "--fbank-config", str(ROOT / "recipes/yesno/conf/fbank.yaml"),
        "--mono-gauss", "150", "--num-leaves", "20", "--tri-gauss", "150", "--tree-opts", "--min-leaf-occ 20",
        "--lm-weights", "2,5,10", "--word-ins-penalties", "0,1", "--nnet-config", str(tmp_path / "nnet.yaml"),
        "--section6", "false", "--beyond-paper", "false", "--sat", "true",  # tri2 (LDA+MLLT), then tri3 (SAT) from it
        "--nnet-gmm", "tri3", "--nnet-feats", "fmllr",  # the networks learn the SAT system's senones from its features
        "--speed-perturb", "true",  # of train_yesno and its copies at speeds 0.9 and 1.1
        "--nj", "2", "--threads", "1")  # 1 thread: a tiny net, a shared CPU
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "stage 13: skipped (section6=false)" in proc.stdout
    assert "stage 14: skipped (beyond_paper=false)" in proc.stdout
    assert (recipe / "exp/compare/results.md").is_file()
    res = json.loads((recipe / "exp/compare/results.json").read_text())
    systems = res["systems"]
    assert list(systems) == ["tri3 GMM", "baseline (member 0)", "mean of members", "ensemble of 2", "distilled (T=2)"]
    assert "on tri3's fMLLR features and the tri3 alignment of train_yesno_sp (train_yesno at speeds 0.9, 1.0, 1.1)" in proc.stdout
    assert len(read_table(recipe / "data/train_yesno_sp/feats.scp")) == 90
    assert len(read_table(recipe / "exp/tri3_ali_sp/ali.scp")) == 90
    # SAT: each speed a speaker of its own (the sp<speed>- prefixes), fMLLR-aligned; decoded in two passes
    assert sorted(k for k, _ in kaldiio.load_ark(str(recipe / "exp/tri3_ali_sp/trans.ark"))) == [
        "sp0.9-global", "sp1.0-global", "sp1.1-global"]
    for s in ("train_yesno", "test_yesno"):
        for d in (f"decode_{s}.si/wer", f"decode_{s}.fmllr/trans.ark", f"decode_{s}/wer"):
            assert (recipe / "exp/tri3" / d).is_file(), d
    proc = run_asrkd(recipe, "decode", "--model-dir", "exp/tri3", "exp/tri3/graph", "data/test_yesno", "exp/x")
    assert proc.returncode != 0 and "a speaker-adapted (SAT) model; decode it with `asrkd decode-fmllr`" in proc.stderr
    # the networks' inputs: tri3's features through each speaker's transform (train: the alignment's,
    # tuning and test sets: the first decoding pass's)
    fmllr = recipe / "data/fmllr_tri3"
    assert sorted(p.name for p in fmllr.iterdir() if p.is_dir()) == ["test_yesno", "train_yesno", "train_yesno_sp"]
    lda_dim = kaldiio.load_mat(str(recipe / "exp/tri3/final.mat")).shape[0]
    for s in ("train_yesno_sp", "train_yesno", "test_yesno"):
        assert (fmllr / s / "cmvn.scp").is_file()
        assert next(iter(kaldiio.load_scp(str(fmllr / s / "feats.scp")).values())).shape[1] == lda_dim
    assert "--transform-dir exp/tri3/decode_test_yesno.fmllr" in (recipe / "exp/log/make_fmllr_feats_test_yesno.log").read_text()
    frames = sum(int(n) for n in read_table(recipe / "data/train_yesno/utt2num_frames").values())
    sp_frames = json.loads((recipe / "exp/nnet/member_0/frame_accuracy_train.json").read_text())["frames"]
    assert abs(sp_frames / frames - (1 + 1 / 0.9 + 1 / 1.1)) < 0.005  # durations / speed
    for name in ("baseline (member 0)", "distilled (T=2)"):
        assert systems[name]["test_yesno_frame_acc"] > 50, name  # 20 senones: chance is 5%
        assert systems[name]["test_yesno_wer"] <= 15, name  # 2 words; see tests/test_recipe.py
    nnet = recipe / "exp/nnet"
    assert not any((nnet / d).exists() for d in ("switched", "student_mixup", "subset_hard", "soft_T2_member_0"))
    # the tuning set is the training set: no separate alignment of it, test aligned on its own
    assert (recipe / "exp/tri3_ali_test_yesno/ali.scp").is_file() and not (recipe / "exp/tri3_ali_train_yesno").exists()


def test_template_default_prep(tmp_path):
    """local/prepare.sh: CORPUS/<set>/<speaker>/*.wav with .txt transcripts and CORPUS/lexicon.txt."""
    corpus = tmp_path / "corpus"
    wavs = sorted(YESNO.glob("*.wav"))
    for s, files in (("train", wavs[:4]), ("test", wavs[-2:])):
        for i, f in enumerate(files):
            d = corpus / s / f"spk{i % 2}"
            d.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, d / f.name)
            (d / f.name).with_suffix(".txt").write_text(" ".join("yes" if x == "1" else "no" for x in f.stem.split("_")))
    (corpus / "lexicon.txt").write_text("YES Y\nNO N\n")
    (corpus / "README").mkdir()  # a folder without audio is not a set
    recipe = copy_template(tmp_path)
    proc = run_recipe(recipe, "--corpus-dir", str(corpus), "--tune-set", "train", "--stop-stage", "0")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for s, n in (("train", 4), ("test", 2)):
        d = recipe / "data" / s
        assert validate_data_dir(d) == []
        utt2spk = read_table(d / "utt2spk")
        assert len(utt2spk) == n and all(u.startswith(spk + "-") for u, spk in utt2spk.items())
    assert not (recipe / "data/README").exists()
    assert (recipe / "data/local/dict/lexicon.txt").read_text() == "YES Y\nNO N\n"
    # a set named but not prepared is an error naming it
    proc = run_recipe(recipe, "--corpus-dir", str(corpus), "--stop-stage", "0")
    assert proc.returncode != 0 and "wrote no data/dev" in proc.stderr, proc.stderr
    # another preparation command over the prepared data/ is an error, not ignored
    proc = run_recipe(recipe, "--corpus-dir", str(corpus), "--tune-set", "train", "--stop-stage", "0",
                      "--prep", "python my_prep.py")
    assert proc.returncode != 0 and "data/ was prepared with --prep bash local/prepare.sh" in proc.stderr, proc.stderr

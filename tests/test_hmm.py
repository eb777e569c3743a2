"""Monophone GMM-HMM training and forced alignment on the real yes/no recordings."""

import json
import shutil
import subprocess
import sys

import kaldiio
import numpy as np
import pytest
import torch

from asrkd.data import read_table, write_table
from asrkd.features import FbankConfig, compute_cmvn_stats_dir, compute_fbank_dir
from asrkd.hmm.gmm import DiagGmmSet
from asrkd.hmm.train import train_mono
from asrkd.lang import build_lexicon, prepare_lang, read_symbols
from conftest import ROOT, SO762, YESNO, so762_subset


@pytest.fixture(scope="module")
def yesno(tmp_path_factory):
    d = tmp_path_factory.mktemp("yesno")
    subprocess.run([sys.executable, str(ROOT / "local/prepare_yesno.py"), str(YESNO), str(d)], check=True)
    lexicon, _ = build_lexicon(d / "local/dict/lexicon.txt", use_cmudict=False)
    prepare_lang(lexicon, d / "lang")
    compute_fbank_dir(d / "train_yesno", FbankConfig(sample_frequency=8000, dither=0.0), nj=2)
    compute_cmvn_stats_dir(d / "train_yesno")
    return d


def phone_segments(ali, pdf_info, phones):
    """Collapse a pdf alignment into (phone, first frame, last frame) segments; a phone
    instance starts where the phone changes or its HMM re-enters state 0."""
    inv = {v: k for k, v in phones.items()}
    segs = []
    for t, pdf in enumerate(ali):
        phone, state = pdf_info[pdf]
        prev = pdf_info[ali[t - 1]] if t else None
        if prev is None or prev[0] != phone or (state == 0 and prev[1] != 0):
            segs.append([inv[phone], t, t])
        segs[-1][2] = t
    return [tuple(s) for s in segs]


def test_mono_flat_start_on_yesno(yesno):
    exp = yesno / "exp" / "mono"
    report = train_mono(yesno / "train_yesno", yesno / "lang", exp, num_iters=15, tot_gauss=100)
    assert report["aligned"] == 30 and report["failed"] == 0

    history = json.loads((exp / "log" / "train.json").read_text())
    ll = [h["loglik_per_frame"] for h in history]
    assert all(b > a - 0.05 for a, b in zip(ll, ll[1:])), ll   # EM never loses likelihood
    assert ll[-1] > ll[0] + 5

    model = torch.load(exp / "final.pt", weights_only=True)
    pdf_info = model["pdf_info"]
    phones = read_symbols(yesno / "lang" / "phones.txt")
    num_frames = read_table(yesno / "train_yesno" / "utt2num_frames")
    text = read_table(yesno / "train_yesno" / "text")
    ali = dict(kaldiio.load_scp(str(exp / "ali.scp")))
    counts = np.array((exp / "pdf_counts").read_text().split(), dtype=np.int64)
    assert counts.sum() == sum(int(n) for n in num_frames.values())
    for utt, a in ali.items():
        assert a.dtype == np.int32 and len(a) == int(num_frames[utt])        # one senone per frame
        assert a.min() >= 0 and a.max() < len(pdf_info)
        words = [seg[0] for seg in phone_segments(a, pdf_info, phones) if seg[0] != "SIL"]
        assert words == ["Y" if w == "YES" else "N" for w in text[utt].split()], utt


def fraction_following_energy(data_dir, exp, lang) -> float:
    """Fraction of utterances whose aligned speech is clearly louder than their aligned silence."""
    model = torch.load(exp / "final.pt", weights_only=True)
    phones = read_symbols(lang / "phones.txt")
    feats = read_table(data_dir / "feats.scp")
    good = []
    for utt, a in kaldiio.load_scp(str(exp / "ali.scp")).items():
        energy = kaldiio.load_mat(feats[utt]).mean(1)
        segs = phone_segments(a, model["pdf_info"], phones)
        speech = np.concatenate([energy[s:e + 1] for p, s, e in segs if p not in ("SIL", "SPN")])
        sil = [energy[s:e + 1] for p, s, e in segs if p == "SIL"]
        good.append(bool(sil) and np.median(speech) > np.median(np.concatenate(sil)) + 1.0)
    return float(np.mean(good))


@pytest.mark.xfail(strict=True, reason="known defect: on yesno's two-word corpus the flat start converges "
                   "to a swapped solution (SIL takes the words, Y/N the pauses); word order is still right")
def test_yesno_word_boundaries_follow_energy(yesno):
    exp = yesno / "exp" / "mono"
    train_mono(yesno / "train_yesno", yesno / "lang", exp, num_iters=15, tot_gauss=100)
    assert fraction_following_energy(yesno / "train_yesno", exp, yesno / "lang") == 1.0


def test_mono_boundaries_on_speechocean762(tmp_path):
    data = so762_subset(tmp_path / "train", "train", speakers=6, per_spk=20)
    compute_fbank_dir(data, FbankConfig(dither=0.0), nj=2)
    compute_cmvn_stats_dir(data)
    lexicon, _ = build_lexicon(SO762 / "resource/lexicon.txt", [data / "text"], use_cmudict=False)
    prepare_lang(lexicon, tmp_path / "lang")
    report = train_mono(data, tmp_path / "lang", tmp_path / "mono", num_iters=20, tot_gauss=300)
    assert report["aligned"] >= 115
    assert fraction_following_energy(data, tmp_path / "mono", tmp_path / "lang") >= 0.95


def test_oov_transcript_word_is_reported(yesno, tmp_path, caplog):
    d = tmp_path / "train"
    shutil.copytree(yesno / "train_yesno", d)
    text = read_table(d / "text")
    utt = next(iter(text))
    text[utt] = text[utt].replace("YES", "MAYBE", 1)
    write_table(d / "text", text)
    report = train_mono(d, yesno / "lang", tmp_path / "mono", num_iters=3, tot_gauss=40)
    assert report["oov_words"] == 1 and report["aligned"] + report["failed"] == 30
    assert "aligned as <UNK>" in caplog.text


def test_gmm_loglik_matches_direct_formula():
    rng = np.random.default_rng(0)
    means, var = rng.normal(size=(3, 2, 4)), rng.uniform(0.5, 2.0, size=(3, 2, 4))
    logw = np.log(np.array([[0.3, 0.7], [0.5, 0.5], [1.0, 1e-300]]))
    gmm = DiagGmmSet(torch.tensor(means), torch.tensor(var), torch.tensor(logw))
    x = rng.normal(size=(5, 4)).astype(np.float32)
    ref = np.empty((5, 3))
    for p in range(3):
        comp = [logw[p, k] - 0.5 * np.sum(np.log(2 * np.pi * var[p, k]) + (x - means[p, k]) ** 2 / var[p, k], 1)
                for k in range(2)]
        ref[:, p] = np.logaddexp(*comp)
    np.testing.assert_allclose(gmm.loglik(x), ref, rtol=1e-4)

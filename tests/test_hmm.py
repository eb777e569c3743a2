"""GMM-HMM training, decision tree and forced alignment on real recordings."""

import json
import logging
import shutil

import kaldiio
import numpy as np
import pytest
import torch

from asrkd.data import read_table, write_table
from asrkd.hmm.align import align, load_corpus, load_model, phone_segments
from asrkd.hmm.gmm import DiagGmmSet
from asrkd.hmm.train import train_mono, train_tri, tree_stats
from asrkd.hmm.tree import ContextTree, build_tree, cluster_phones, merge_leaves
from asrkd.lang import read_symbols
from asrkd.topo import read_topo
from asrkd.utils import AsrkdError
from conftest import so762_prepared


def words_and_energy(data_dir, ali_dir, lang):
    """Per utterance: the non-silence phone sequence, and whether aligned speech is clearly
    louder (mean log-mel) than aligned silence."""
    _, tree = load_model(ali_dir)
    topo, phones = read_topo(lang / "topo"), {i: p for p, i in read_symbols(lang / "phones.txt").items()}
    feats = read_table(data_dir / "feats.scp")
    out = {}
    for utt, a in kaldiio.load_scp(str(ali_dir / "ali.scp")).items():
        energy = kaldiio.load_mat(feats[utt]).mean(1)
        segs = [(phones[p], s, e) for p, s, e in phone_segments(a, tree, topo)]
        speech = np.concatenate([energy[s:e] for p, s, e in segs if p not in ("SIL", "SPN")])
        sil = [energy[s:e] for p, s, e in segs if p == "SIL"]
        louder = bool(sil) and np.median(speech) > np.median(np.concatenate(sil)) + 1.0
        out[utt] = ([p for p, _, _ in segs if p not in ("SIL", "SPN")], louder)
    return out


def test_mono_flat_start_on_yesno(yesno, yesno_mono):
    history = json.loads((yesno_mono / "mono/log/train.json").read_text())
    ll = [h["loglik_per_frame"] for h in history]
    assert all(b > a - 0.05 for a, b in zip(ll, ll[1:])), ll   # EM never loses likelihood
    assert ll[-1] > ll[0] + 5

    ali_dir = yesno_mono / "mono_ali"
    report = json.loads((ali_dir / "align_report.json").read_text())
    assert report["aligned"] == 30 and report["failed"] == 0
    num_frames = read_table(yesno / "train_yesno/utt2num_frames")
    ali = dict(kaldiio.load_scp(str(ali_dir / "ali.scp")))
    counts = np.array((ali_dir / "pdf_counts").read_text().split(), dtype=np.int64)
    assert counts.sum() == sum(int(n) for n in num_frames.values()) == report["frames"]
    for utt, a in ali.items():
        assert a.dtype == np.int32 and len(a) == int(num_frames[utt])        # one senone per frame
        assert a.min() >= 0 and a.max() < report["num_pdfs"]
    # YES/NO segments in transcript order, and they are where the speech energy is
    text = read_table(yesno / "train_yesno/text")
    for utt, (words, louder) in words_and_energy(yesno / "train_yesno", ali_dir, yesno / "lang").items():
        assert words == ["Y" if w == "YES" else "N" for w in text[utt].split()], utt
        assert louder, utt


@pytest.fixture(scope="module")
def so762(tmp_path_factory):
    """Mono and tri systems on 120 utterances (6 speakers) of speechocean762 train."""
    d = so762_prepared(tmp_path_factory.mktemp("so762"), speakers=6, per_spk=20)
    data = d / "train"
    train_mono(data, d / "lang", d / "mono", num_iters=20, tot_gauss=300)
    align(data, d / "lang", d / "mono", d / "mono_ali")
    train_tri(data, d / "lang", d / "mono_ali", d / "tri", num_leaves=150, tot_gauss=600, num_iters=12,
              min_leaf_occ=20)
    align(data, d / "lang", d / "tri", d / "tri_ali")
    return d


def test_mono_boundaries_on_speechocean762(so762):
    report = json.loads((so762 / "mono_ali/align_report.json").read_text())
    assert report["aligned"] >= 115
    louder = [v[1] for v in words_and_energy(so762 / "train", so762 / "mono_ali", so762 / "lang").values()]
    assert np.mean(louder) >= 0.95


def test_tree_size_and_mapping(so762):
    tree = ContextTree.read(so762 / "tri/tree")
    assert abs(tree.num_pdfs - 150) <= 15
    assert sorted(n[1] for n in tree.nodes if n[0] == "leaf") == list(range(tree.num_pdfs))
    # every triphone seen in the training alignment maps to a valid senone of its own phone
    topo = read_topo(so762 / "lang/topo")
    _, mono_tree = load_model(so762 / "mono_ali")
    corpus = load_corpus(so762 / "train", so762 / "lang")
    ali = dict(kaldiio.load_scp(str(so762 / "mono_ali/ali.scp")))
    contexts, states, _ = tree_stats(corpus, ali, mono_tree, topo)
    senones = {tree.senone(tuple(c), int(s)) for c, s in zip(contexts, states)}
    assert all(0 <= s < tree.num_pdfs for s in senones) and len(senones) > 0.9 * tree.num_pdfs
    for c, s in zip(contexts[:200], states[:200]):
        assert tree.pdf_info[tree.senone(tuple(c), int(s))] == (c[1], s)
    # so does an unseen context (phone 0 = utterance edge on both sides)
    assert 0 <= tree.senone((0, int(contexts[0, 1]), 0), 0) < tree.num_pdfs
    # triphones beat monophones on the same data
    mono = json.loads((so762 / "mono_ali/align_report.json").read_text())
    tri = json.loads((so762 / "tri_ali/align_report.json").read_text())
    assert tri["avg_loglik_per_frame"] > mono["avg_loglik_per_frame"]


def test_leaf_clustering_and_not_split_silence(so762):
    """Kaldi build-tree's options: silence roots not split by context; leaves of a root merged
    below the smallest split's gain, never across roots."""
    topo = read_topo(so762 / "lang/topo")
    _, mono_tree = load_model(so762 / "mono_ali")
    corpus = load_corpus(so762 / "train", so762 / "lang")
    ali = dict(kaldiio.load_scp(str(so762 / "mono_ali/ali.scp")))
    contexts, states, stats = tree_stats(corpus, ali, mono_tree, topo)
    total = stats.sum()
    var_floor = 0.01 * (total.s2 / total.occ - (total.s1 / total.occ) ** 2)
    questions = cluster_phones({int(p): stats.sum(contexts[:, 1] == p) for p in np.unique(contexts[:, 1])}, var_floor)
    phone_states = {p: e.num_states for e in topo for p in e.phones}
    silence = frozenset(int(x) for x in (so762 / "lang/phones/silence.int").read_text().split())
    args = (contexts, states, stats, questions, 150, 20, var_floor, phone_states)
    plain, _ = build_tree(*args)
    no_sil, _ = build_tree(*args, not_split=silence)
    sil_roots = sum(phone_states[p] for p in silence)
    assert sum(p in silence for p, _ in plain.pdf_info) > sil_roots  # silence is split by context by default
    assert sum(p in silence for p, _ in no_sil.pdf_info) == sil_roots and no_sil.num_pdfs == plain.num_pdfs
    clustered, leaf_stats = build_tree(*args, not_split=silence, cluster=True)
    leaves = [n for n in clustered.nodes if n[0] == "leaf"]
    assert len(leaves) == no_sil.num_pdfs and clustered.num_pdfs < len(leaves)
    assert sorted({n[1] for n in leaves}) == list(range(clustered.num_pdfs)) == list(range(len(leaf_stats.occ)))
    for (phone, state), root in clustered.roots.items():  # every leaf's senone belongs to its own root
        assert all(clustered.pdf_info[clustered.nodes[n][1]] == (phone, state) for n in clustered._leaves(root))
    assert np.isclose(leaf_stats.occ.sum(), stats.occ.sum())
    for c, st in zip(contexts[:300], states[:300]):  # the merged tree maps like the unmerged one, coarser
        assert clustered.pdf_info[clustered.senone(tuple(c), int(st))] == (c[1], st)


def test_merge_leaves_by_hand():
    """Leaves 0 and 2 hold the same Gaussian, 1 another: only 0 and 2 merge, and only under a
    threshold above their (small) merge cost."""
    rng = np.random.default_rng(0)
    x = [rng.normal(m, 1, (500, 2)) for m in (0.0, 5.0, 0.0)]
    occ = np.array([len(a) for a in x], float)
    s1, s2 = np.stack([a.sum(0) for a in x]), np.stack([(a**2).sum(0) for a in x])
    floor = np.full(2, 1e-3)
    assert merge_leaves(occ, s1, s2, 50.0, floor) == [[0, 2], [1]]
    assert merge_leaves(occ, s1, s2, 0.0, floor) == [[0], [1], [2]]
    assert merge_leaves(occ, s1, s2, 1e9, floor) == [[0, 2, 1]]


def test_tri_alignment_outputs(so762):
    ali_dir = so762 / "tri_ali"
    report = json.loads((ali_dir / "align_report.json").read_text())
    num_frames = read_table(so762 / "train/utt2num_frames")
    ali = dict(kaldiio.load_scp(str(ali_dir / "ali.scp")))
    assert len(ali) == report["aligned"] >= 115
    assert report["environment"]["packages"]["numba"] and report["environment"]["threads"] >= 1
    for utt, a in ali.items():
        assert len(a) == int(num_frames[utt]) and 0 <= a.min() and a.max() < report["num_pdfs"]
    counts = np.array((ali_dir / "pdf_counts").read_text().split(), dtype=np.int64)
    assert counts.sum() == sum(len(a) for a in ali.values()) == report["frames"]
    assert sum(report["senone_occupancy_histogram"].values()) == report["num_pdfs"] == len(counts)
    priors = np.array((ali_dir / "priors").read_text().split(), dtype=np.float64)
    assert priors.min() > 0 and abs(priors.sum() - 1) < 1e-4
    # the phone CTM tiles every aligned utterance: contiguous segments from 0 to its length
    ctm = {}
    for line in (ali_dir / "phones.ctm").read_text().splitlines():
        utt, _, start, dur, _ = line.split()
        ctm.setdefault(utt, []).append((round(float(start) * 100), round(float(dur) * 100)))
    for utt, segs in ctm.items():
        assert segs[0][0] == 0 and all(s + d == n for (s, d), (n, _) in zip(segs, segs[1:]))
        assert segs[-1][0] + segs[-1][1] == len(ali[utt])


def test_tree_file_errors(tmp_path):
    tree = ContextTree.monophone({1: 5, 2: 3})
    tree.write(tmp_path / "tree")
    assert ContextTree.read(tmp_path / "tree").senone((2,), 1) == 6
    lines = (tmp_path / "tree").read_text().splitlines()
    (tmp_path / "bad").write_text("\n".join(lines[:3] + ["leaf x"] + lines[3:]) + "\n")
    with pytest.raises(AsrkdError, match=r"bad:4: bad tree line"):
        ContextTree.read(tmp_path / "bad")


def test_oov_transcript_word_is_reported(yesno, tmp_path, caplog):
    d = tmp_path / "train"
    shutil.copytree(yesno / "train_yesno", d)
    text = read_table(d / "text")
    utt = next(iter(text))
    text[utt] = text[utt].replace("YES", "MAYBE", 1)
    write_table(d / "text", text)
    train_mono(d, yesno / "lang", tmp_path / "mono", num_iters=3, tot_gauss=40)
    report = align(d, yesno / "lang", tmp_path / "mono", tmp_path / "mono_ali")
    assert report["oov_words"] == 1 and report["aligned"] + report["failed"] == 30
    assert "aligned as <UNK>" in caplog.text


def test_killed_training_resumes_from_checkpoint(yesno, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO)
    args = (yesno / "train_yesno", yesno / "lang")
    train_mono(*args, tmp_path / "clean", num_iters=5, tot_gauss=60)
    mix_up, calls = DiagGmmSet.mix_up, []

    def dies_at_iteration_3(self, *a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return mix_up(self, *a, **kw)

    monkeypatch.setattr(DiagGmmSet, "mix_up", dies_at_iteration_3)
    with pytest.raises(KeyboardInterrupt):
        train_mono(*args, tmp_path / "killed", num_iters=5, tot_gauss=60)
    monkeypatch.setattr(DiagGmmSet, "mix_up", mix_up)
    assert (tmp_path / "killed/checkpoint.pt").is_file() and not (tmp_path / "killed/final.pt").exists()
    for options in ({"tot_gauss": 61}, {"tot_gauss": 60, "seed": 1}):  # resumed with the same options only
        with pytest.raises(AsrkdError, match="made with .*rerun with --force"):
            train_mono(*args, tmp_path / "killed", num_iters=5, **options)
    train_mono(*args, tmp_path / "killed", num_iters=5, tot_gauss=60)
    assert "resuming from the checkpoint of iteration 2" in caplog.text
    assert not (tmp_path / "killed/checkpoint.pt").exists()
    clean, resumed = (torch.load(tmp_path / d / "final.pt", weights_only=True) for d in ("clean", "killed"))
    assert all(torch.equal(clean[k], resumed[k]) for k in ("means", "vars", "logw"))


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


def test_fpmath_exp_and_log_are_accurate():
    from asrkd.hmm import fpmath

    eps = np.finfo(np.float64).eps  # relative errors: other tests may leave denormals flushed
    rng = np.random.default_rng(0)
    y = np.concatenate([rng.uniform(-708, 709, 20000), rng.uniform(-1, 1, 20000), [0.0, -0.3465, 0.3466, 709.0]])
    e = np.array([fpmath.exp(v) for v in y])
    assert np.all(np.abs(e - np.exp(y)) <= 2 * eps * np.exp(y))
    x = np.concatenate([np.exp(rng.uniform(-708, 709, 20000)), rng.uniform(0.5, 2, 20000), [1.0, 2.0]])
    lg = np.array([fpmath.log(v) for v in x])
    assert np.all(np.abs(lg - np.log(x)) <= 4 * eps * np.abs(np.log(x)))
    assert fpmath.log(0.0) == -np.inf and fpmath.log(1.0) == 0.0 and fpmath.exp(0.0) == 1.0

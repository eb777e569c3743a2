"""fMLLR (asrkd.hmm.fmllr) on data with a known answer: the transform that maps a speaker's
frames back onto the model is recovered, improves the objective, composes, and round-trips
through trans.ark; and a SAT model is never scored without its transforms."""

import kaldiio
import numpy as np
import pytest

from asrkd.data import read_table, subset_data_dir

from asrkd.hmm.fmllr import (SpeakerTransforms, apply_fmllr, compose, estimate_fmllr, fmllr_objective, fmllr_stats,
                             identity, speaker_fmllr)
from asrkd.hmm.gmm import DiagGmmSet
from asrkd.utils import AsrkdError

D, P = 5, 4


def speaker_data(seed: int, frames: int = 4000):
    """A 2-component GMM per pdf, frames drawn from it, and those frames seen through a
    speaker's affine distortion: (gmm, model-space frames y, observed x, alignment, A, b)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(P, 2, D)) * 3
    var = rng.uniform(0.5, 2.0, size=(P, 2, D))
    gmm = DiagGmmSet(means, var, np.log(np.full((P, 2), 0.5)))
    ali = rng.integers(0, P, frames)
    comp = rng.integers(0, 2, frames)
    y = means[ali, comp] + rng.normal(size=(frames, D)) * np.sqrt(var[ali, comp])
    a = np.eye(D) + 0.3 * rng.normal(size=(D, D))
    b = rng.normal(size=D)
    x = ((y - b) @ np.linalg.inv(a).T).astype(np.float32)
    return gmm, y, x, ali, a, b


def test_fmllr_recovers_the_speakers_transform():
    """Each estimate raises the objective; re-estimated on the adapted frames and composed (as
    SAT does), the transform converges on the true one."""
    gmm, y, x, ali, a, b = speaker_data(0)
    eye = identity(D)
    w = eye
    for _ in range(3):
        beta, k_stats, g_stats = fmllr_stats(gmm, apply_fmllr(w, x), ali, np.ones(len(x)))
        assert beta == len(x) and np.allclose(g_stats, g_stats.transpose(0, 2, 1))
        step = estimate_fmllr(beta, k_stats, g_stats)
        assert fmllr_objective(step, beta, k_stats, g_stats) > fmllr_objective(eye, beta, k_stats, g_stats)
        w = compose(step, w)
    assert np.abs(w[:, :D] - a).max() < 0.05 and np.abs(w[:, D] - b).max() < 0.05
    assert np.abs(apply_fmllr(w, x) - y).mean() < 0.05
    # the posteriors of another model with the same Gaussians (a SAT system's alignment model)
    same = fmllr_stats(gmm, x, ali, np.ones(len(x)), post_gmm=DiagGmmSet(gmm.means, gmm.vars, gmm.logw))
    assert all(np.array_equal(u, v) for u, v in zip(same, fmllr_stats(gmm, x, ali, np.ones(len(x)))))
    with pytest.raises(AsrkdError, match="alignment model's Gaussians"):
        fmllr_stats(gmm, x, ali, np.ones(len(x)), post_gmm=DiagGmmSet(gmm.means[:, :1], gmm.vars[:, :1],
                                                                       gmm.logw[:, :1]))
    # frames of weight 0 do not count; too few frames keep the identity
    half = np.where(np.arange(len(x)) < 2000, 1.0, 0.0)
    assert fmllr_stats(gmm, x, ali, half)[0] == 2000
    assert np.array_equal(estimate_fmllr(*fmllr_stats(gmm, x[:40], ali[:40], np.ones(40))), eye)


def test_transforms_compose_and_are_per_speaker(tmp_path):
    gmm, _, x1, ali1, _, _ = speaker_data(1)
    _, _, x2, ali2, _, _ = speaker_data(1)
    feats = {"s1-u1": x1[:2000], "s1-u2": x1[2000:], "s2-u1": x2 * 2 + 1}
    ali = {"s1-u1": ali1[:2000], "s1-u2": ali1[2000:], "s2-u1": ali2}
    utt2spk = {u: u.split("-")[0] for u in feats}
    transforms, gain = speaker_fmllr(gmm, feats, ali, np.ones(P), utt2spk)
    assert sorted(transforms) == ["s1", "s2"] and gain > 0
    assert not np.allclose(transforms["s1"], transforms["s2"])
    w1, w2 = transforms["s1"], transforms["s2"]
    both = compose(w2, w1)
    assert np.allclose(apply_fmllr(both, x1[:50]), apply_fmllr(w2, apply_fmllr(w1, x1[:50])), atol=1e-4)
    SpeakerTransforms(transforms, {}).write(tmp_path)
    back = SpeakerTransforms.read(tmp_path, utt2spk)
    assert np.array_equal(back("s2-u1", feats["s2-u1"]), apply_fmllr(w2, feats["s2-u1"]))
    with pytest.raises(AsrkdError, match="no fMLLR transform for its speaker"):
        SpeakerTransforms.read(tmp_path, {"s3-u1": "s3"})("s3-u1", x1[:5])
    with pytest.raises(AsrkdError, match="the features have 3 dimensions"):
        back("s1-u1", x1[:5, :3])
    (tmp_path / "trans.ark").write_bytes(b"garbage")
    with pytest.raises(AsrkdError, match="not a Kaldi archive"):
        SpeakerTransforms.read(tmp_path, utt2spk)


def test_make_fmllr_feats_writes_the_adapted_features_as_a_data_dir(small_dir, tmp_path, monkeypatch):
    """make-fmllr-feats: each utterance's features are the system's (LDA+MLLT) features through
    its speaker's transform, in a data dir with the source's tables and no CMVN stats; a
    speaker without a transform is skipped and listed (an error above 5%); a rerun skips,
    other transforms are an error until --force."""
    from asrkd.features import FbankConfig, FeatureReader, compute_cmvn_stats_dir, compute_fbank_dir
    from asrkd.hmm.align import cepstra
    from asrkd.hmm.fmllr_feats import make_fmllr_feats
    from asrkd.hmm.transform import FeatureTransform

    compute_fbank_dir(small_dir, FbankConfig(dither=0.0))
    compute_cmvn_stats_dir(small_dir)
    rng = np.random.default_rng(0)
    model = tmp_path / "tri3"
    model.mkdir()
    lda = FeatureTransform(rng.normal(size=(D, 13 * 3)), context=1)
    lda.write(model)
    spks = sorted(set(read_table(small_dir / "utt2spk").values()))
    w = {s: np.hstack([np.eye(D) + 0.1 * rng.normal(size=(D, D)), rng.normal(size=(D, 1))]) for s in spks}
    SpeakerTransforms(w, {}).write(tmp_path)
    out = tmp_path / "fmllr"
    monkeypatch.chdir(tmp_path)  # a relative output path, as recipes give
    assert make_fmllr_feats(small_dir, model, "fmllr", tmp_path, nj=2) == {"utterances": 6, "skipped": 0}
    src, new = FeatureReader(small_dir), read_table(out / "feats.scp")
    utt2spk = read_table(small_dir / "utt2spk")
    for utt in src.keys():
        x = apply_fmllr(w[utt2spk[utt]], lda(cepstra(src[utt])))
        assert np.array_equal(kaldiio.load_mat(new[utt]), x)
    assert read_table(out / "text") == read_table(small_dir / "text") and not (out / "cmvn.scp").exists()
    assert make_fmllr_feats(small_dir, model, out, tmp_path) == {"skipped_stage": True}
    SpeakerTransforms({spks[0]: w[spks[0]]}, {}).write(tmp_path)
    with pytest.raises(AsrkdError, match="another transforms; rerun with --force"):
        make_fmllr_feats(small_dir, model, out, tmp_path)
    with pytest.raises(AsrkdError, match="3 of 6 utterances have no fMLLR transform"):
        make_fmllr_feats(small_dir, model, out, tmp_path, force=True)
    assert make_fmllr_feats(small_dir, model, out, tmp_path, force=True, max_skipped=0.5)["skipped"] == 3
    assert sorted(read_table(out / "utt2spk").values()) == [spks[0]] * 3
    assert len((out / "log/fmllr_skipped.txt").read_text().splitlines()) == 3
    # without transforms: the speaker-independent features
    make_fmllr_feats(small_dir, model, tmp_path / "si")
    utt = src.keys()[0]
    assert np.array_equal(kaldiio.load_mat(read_table(tmp_path / "si/feats.scp")[utt]), lda(cepstra(src[utt])))
    # what the features are travels with them: GMMs refuse them, a network reads only its own kind
    from asrkd.decode.decoder import NnetScorer
    from asrkd.features import check_feature_kind, feature_kind
    from asrkd.hmm.align import load_corpus
    from asrkd.nnet.model import build_model, load_nnet, save_nnet
    from asrkd.nnet.soft_targets import make_soft_targets

    assert feature_kind(small_dir) == "fbank" and feature_kind(out).startswith("fmllr ")
    assert feature_kind(out) == feature_kind(tmp_path / "si")  # the same GMM's features
    subset_data_dir(out, tmp_path / "subset", first=2)
    assert feature_kind(tmp_path / "subset") == feature_kind(out)
    with pytest.raises(AsrkdError, match="fmllr: fMLLR features .*, but a GMM system reads fbank features"):
        load_corpus(out, tmp_path / "no-lang-needed")
    net = build_model("dnn", D, 3, 8, 1, 0, 0, 0.0)
    save_nnet(tmp_path / "dnn/final.pt", net, {"features": "fbank"})
    with pytest.raises(AsrkdError, match=r"dnn reads fbank features"):
        NnetScorer([tmp_path / "dnn"], out)
    with pytest.raises(AsrkdError, match=r"dnn reads fbank features"):
        make_soft_targets([load_nnet(tmp_path / "dnn")], out, {2.0: tmp_path / "soft_T2"}, k=2,
                          sources={"nnet_0": tmp_path / "dnn"})
    check_feature_kind(small_dir, "fbank", tmp_path / "dnn")


def test_make_fmllr_feats_resumes_after_a_failed_job_with_another_nj(small_dir, tmp_path, monkeypatch):
    """A job that fails leaves the finished ones for a rerun with the same split; a rerun with
    another --nj reuses none of them and writes every utterance."""
    from asrkd.features import FbankConfig, compute_cmvn_stats_dir, compute_fbank_dir
    from asrkd.hmm import fmllr_feats
    from asrkd.hmm.transform import FeatureTransform

    compute_fbank_dir(small_dir, FbankConfig(dither=0.0))
    compute_cmvn_stats_dir(small_dir)
    FeatureTransform(np.random.default_rng(0).normal(size=(D, 13 * 3)), context=1).write(tmp_path)
    job = fmllr_feats._feats_job

    def second_fails(data_dir, model_dir, transforms, utts, ark):
        if ark.name.endswith(".2.ark"):
            raise RuntimeError("killed")
        return job(data_dir, model_dir, transforms, utts, ark)

    monkeypatch.setattr(fmllr_feats, "_feats_job", second_fails)
    with pytest.raises(Exception):
        fmllr_feats.make_fmllr_feats(small_dir, tmp_path, tmp_path / "si", nj=2)
    assert len(list((tmp_path / "si/log/jobs").glob("*.pkl"))) == 1
    monkeypatch.setattr(fmllr_feats, "_feats_job", job)
    assert fmllr_feats.make_fmllr_feats(small_dir, tmp_path, tmp_path / "si", nj=1)["utterances"] == 6
    assert len(read_table(tmp_path / "si/feats.scp")) == 6

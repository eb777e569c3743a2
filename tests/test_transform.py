"""LDA and MLLT (asrkd.hmm.transform) on data with known answers, the numba linear algebra
against numpy's, and the transform's file round trip."""

import numpy as np
import pytest

from asrkd.hmm.gmm import DiagGmmSet
from asrkd.hmm.transform import (FeatureTransform, _cholesky, _inverse, _jacobi_eigh, estimate_lda, estimate_mllt,
                                 lda_stats, mllt_objective, mllt_stats, transform_means)
from asrkd.utils import AsrkdError


def test_linear_algebra_matches_numpy():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(30, 30))
    spd = m @ m.T + 30 * np.eye(30)
    low = _cholesky(spd)
    assert np.allclose(low @ low.T, spd) and np.allclose(low, np.tril(low))
    assert _cholesky(-spd)[0, 0] == -1.0
    assert np.allclose(_inverse(m) @ m, np.eye(30), atol=1e-9)
    assert np.isnan(_inverse(np.zeros((3, 3)))).all()
    w, v = _jacobi_eigh(spd)
    assert np.allclose(np.sort(w), np.linalg.eigvalsh(spd)) and np.allclose(v.T @ v, np.eye(30), atol=1e-10)
    assert np.allclose(spd @ v, v * w)


def test_lda_finds_the_separating_direction_and_whitens():
    rng = np.random.default_rng(1)
    direction = rng.normal(size=6)
    direction /= np.linalg.norm(direction)
    mix = rng.normal(size=(6, 6))
    x = np.concatenate([rng.normal(size=(4000, 6)) @ mix + k * 3 * direction for k in range(3)]).astype(np.float32)
    ali = np.repeat(np.arange(3), 4000)
    weight = np.ones(len(x), dtype=bool)
    weight[:10] = False
    count, sums, scatter = lda_stats(x, ali, weight, 4)  # pdf 3 unseen
    assert count.tolist() == [3990, 4000, 4000, 0] and np.allclose(scatter, scatter.T)
    lda = estimate_lda(count, sums, scatter, 2)
    y = x.astype(np.float64) @ lda.T
    within = sum(np.cov(y[ali == k].T, bias=True) * 4000 for k in range(3)) / 12000
    assert np.allclose(within, np.eye(2), atol=0.02)  # the within-class covariance made the identity
    # the first row separates the classes far better than the second
    spread = [np.ptp([y[ali == k, i].mean() for k in range(3)]) for i in range(2)]
    assert spread[0] > 10 * spread[1]
    with pytest.raises(AsrkdError, match="LDA dimension 7"):
        estimate_lda(count, sums, scatter, 7)
    with pytest.raises(AsrkdError, match="no aligned speech frame"):
        estimate_lda(*lda_stats(x, ali, np.zeros(len(x), dtype=bool), 4), 2)
    nan = x.copy()
    nan[20, 0] = np.nan  # a weighted frame
    with pytest.raises(AsrkdError, match="singular"):
        estimate_lda(*lda_stats(nan, ali, weight, 4), 2)


def test_mllt_rotates_to_diagonal_covariances():
    rng = np.random.default_rng(2)
    rot, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    K, n = 6, 3000
    means = rng.normal(scale=3, size=(K, 4))
    sds = rng.uniform(0.3, 3.0, size=(K, 4))
    z = np.concatenate([means[k] + sds[k] * rng.normal(size=(n, 4)) for k in range(K)])
    x = z @ rot  # each class diagonal in z = x @ rot.T, correlated in x
    ali = np.repeat(np.arange(K), n)

    def diag_model(feats):
        mu = np.stack([feats[ali == k].mean(0) for k in range(K)])
        var = np.stack([feats[ali == k].var(0) for k in range(K)])
        return DiagGmmSet(mu[:, None], var[:, None], np.zeros((K, 1)))

    def off_diagonal(feats):
        return max(np.abs(np.corrcoef(feats[ali == k].T) - np.eye(4)).max() for k in range(K))

    gmm = diag_model(x)
    g, beta = mllt_stats(gmm, x, ali, np.ones(len(x), dtype=bool))
    assert beta == pytest.approx(len(x)) and np.allclose(g, g.transpose(0, 2, 1))
    a = estimate_mllt(g, beta)
    assert mllt_objective(a, g, beta) > mllt_objective(np.eye(4), g, beta)
    transform_means(gmm, a)
    assert np.allclose(gmm.means[:, 0], np.stack([(x @ a.T)[ali == k].mean(0) for k in range(K)]))
    total = a
    for _ in range(10):  # as in training: variances re-estimated in the new space, MLLT again
        y = x @ total.T
        g, beta = mllt_stats(diag_model(y), y, ali, np.ones(len(x), dtype=bool))
        total = estimate_mllt(g, beta) @ total
    assert off_diagonal(x) > 0.5 and off_diagonal(x @ total.T) < 0.05


def test_transform_round_trip_and_checks(tmp_path):
    rng = np.random.default_rng(3)
    t = FeatureTransform(rng.normal(size=(4, 13 * 7)), 3)
    ceps = rng.normal(size=(20, 13)).astype(np.float32)
    y = t(ceps)
    assert y.shape == (20, 4) and y.dtype == np.float32
    edge = np.concatenate([ceps[[0, 0, 0, 0, 1, 2, 3]].ravel()])  # frame 0: the first frame repeated
    assert np.allclose(y[0], t.matrix @ edge, atol=1e-5)
    t.write(tmp_path)
    back = FeatureTransform.read(tmp_path)
    assert back.context == 3 and np.array_equal(back.matrix, t.matrix) and np.array_equal(back(ceps), y)
    assert FeatureTransform.read(tmp_path / "none") is None
    with pytest.raises(AsrkdError, match="13 cepstra"):
        t(rng.normal(size=(20, 12)).astype(np.float32))
    with pytest.raises(AsrkdError, match="spliced frames"):
        FeatureTransform(np.eye(10), 3)
    for opts, msg in (("--left-context 3", "expected '--left-context=N"), ("--left-context=3 --right-context=2",
                                                                           "as many frames on each side")):
        (tmp_path / "splice_opts").write_text(opts)
        with pytest.raises(AsrkdError, match=msg):
            FeatureTransform.read(tmp_path)
    t.write(tmp_path)
    (tmp_path / "final.mat").write_bytes(b"not a matrix")
    with pytest.raises(AsrkdError, match="final.mat: not a Kaldi matrix"):
        FeatureTransform.read(tmp_path)
    (tmp_path / "splice_opts").unlink()
    with pytest.raises(AsrkdError, match="splice_opts: missing"):
        FeatureTransform.read(tmp_path)
    gmm = DiagGmmSet(np.zeros((2, 1, 4)), np.ones((2, 1, 4)), np.zeros((2, 1)))
    with pytest.raises(AsrkdError, match="features of 39 dimensions for GMMs of 4"):
        gmm.loglik(np.zeros((5, 39), dtype=np.float32))

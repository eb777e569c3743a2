"""Feature transforms of GMM systems (Kaldi train_lda_mllt.sh): spliced cepstra projected by
LDA, then rotated by MLLT (a semi-tied covariance, Gopinath 1998), stored as the model
dir's `final.mat` (a Kaldi matrix [dim, spliced dim]).

As in `asrkd.hmm.gmm`, every number that feeds a model or an alignment is computed in
float64 by the numba kernels below, each output element in a fixed order, with no BLAS and
no LAPACK (whose kernels differ between CPUs): Cholesky, Jacobi eigenvalues and
Gauss-Jordan inversion are written out here for the 40-100 dimensional matrices involved.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import kaldiio
import numba
import numpy as np

from asrkd.features import splice
from asrkd.hmm import fpmath
from asrkd.hmm.gmm import _gauss_terms, component_loglik
from asrkd.utils import AsrkdError

log = logging.getLogger(__name__)
MATRIX = "final.mat"


@numba.njit(cache=True)
def _matmul(a, b):
    """a @ b, each element summed in index order."""
    out = np.zeros((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        for k in range(a.shape[1]):
            aik = a[i, k]
            for j in range(b.shape[1]):
                out[i, j] += aik * b[k, j]
    return out


@numba.njit(cache=True)
def _project(x, m, out):
    """out[t] = m @ x[t] (float32 out), each sum in index order."""
    for t in range(x.shape[0]):
        for i in range(m.shape[0]):
            s = 0.0
            for j in range(m.shape[1]):
                s += m[i, j] * np.float64(x[t, j])
            out[t, i] = s


@numba.njit(cache=True)
def _cholesky(a):
    """Lower-triangular L with L L^T = a (a symmetric positive definite); L[0, 0] = -1 if not."""
    n = a.shape[0]
    low = np.zeros((n, n))
    for j in range(n):
        s = a[j, j]
        for k in range(j):
            s -= low[j, k] * low[j, k]
        if not s > 0.0:  # also NaN
            low[0, 0] = -1.0
            return low
        low[j, j] = math.sqrt(s)
        for i in range(j + 1, n):
            s = a[i, j]
            for k in range(j):
                s -= low[i, k] * low[j, k]
            low[i, j] = s / low[j, j]
    return low


@numba.njit(cache=True)
def _inverse(a):
    """Gauss-Jordan inverse with partial pivoting (first largest pivot); nan if singular."""
    n = a.shape[0]
    w = np.zeros((n, 2 * n))
    w[:, :n] = a
    for i in range(n):
        w[i, n + i] = 1.0
    for c in range(n):
        piv = c
        for r in range(c + 1, n):
            if abs(w[r, c]) > abs(w[piv, c]):
                piv = r
        if w[piv, c] == 0.0:
            return np.full((n, n), np.nan)
        if piv != c:
            for j in range(2 * n):
                w[c, j], w[piv, j] = w[piv, j], w[c, j]
        p = w[c, c]
        for j in range(2 * n):
            w[c, j] /= p
        for r in range(n):
            if r != c and w[r, c] != 0.0:
                f = w[r, c]
                for j in range(2 * n):
                    w[r, j] -= f * w[c, j]
    return w[:, n:].copy()


@numba.njit(cache=True)
def _jacobi_eigh(a, sweeps=100):
    """Eigenvalues and eigenvectors (columns) of a symmetric matrix by cyclic Jacobi rotations."""
    n = a.shape[0]
    a = a.copy()
    v = np.eye(n)
    for _ in range(sweeps):
        off = 0.0
        for p in range(n):
            for q in range(p + 1, n):
                off += a[p, q] * a[p, q]
        if off < 1e-30:
            break
        for p in range(n - 1):
            for q in range(p + 1, n):
                if a[p, q] == 0.0:
                    continue
                theta = (a[q, q] - a[p, p]) / (2.0 * a[p, q])
                t = (1.0 if theta >= 0 else -1.0) / (abs(theta) + math.sqrt(theta * theta + 1.0))
                c = 1.0 / math.sqrt(t * t + 1.0)
                s = t * c
                for k in range(n):
                    akp, akq = a[k, p], a[k, q]
                    a[k, p], a[k, q] = c * akp - s * akq, s * akp + c * akq
                for k in range(n):
                    apk, aqk = a[p, k], a[q, k]
                    a[p, k], a[q, k] = c * apk - s * aqk, s * apk + c * aqk
                for k in range(n):
                    vkp, vkq = v[k, p], v[k, q]
                    v[k, p], v[k, q] = c * vkp - s * vkq, s * vkp + c * vkq
    w = np.empty(n)
    for i in range(n):
        w[i] = a[i, i]
    return w, v


@numba.njit(cache=True)
def _column_variance(x):
    """Each column's variance (float64), summed in row order."""
    T, D = x.shape
    mean, var = np.zeros(D), np.zeros(D)
    for t in range(T):
        for d in range(D):
            mean[d] += np.float64(x[t, d])
    for d in range(D):
        mean[d] /= T
    for t in range(T):
        for d in range(D):
            dev = np.float64(x[t, d]) - mean[d]
            var[d] += dev * dev
    for d in range(D):
        var[d] /= T
    return var


def variance_floor(feats: list[np.ndarray]) -> np.ndarray:
    """1% of the features' global variance per dimension: the GMM's variance floor."""
    return 0.01 * _column_variance(np.concatenate(feats))


@numba.njit(cache=True)
def _lda_kernel(x, ali, weight, count, sums, scatter):
    """Per class (pdf) frame count and sum, and the total scatter sum x x^T, of the frames
    with weight 1 (weight 0: left out), in time order."""
    D = x.shape[1]
    for t in range(x.shape[0]):
        if weight[t] == 0:
            continue
        p = ali[t]
        count[p] += 1.0
        for i in range(D):
            xi = np.float64(x[t, i])
            sums[p, i] += xi
            for j in range(i + 1):
                scatter[i, j] += xi * np.float64(x[t, j])


def lda_stats(x: np.ndarray, ali: np.ndarray, weight: np.ndarray, num_pdfs: int) -> tuple:
    """(count [P], sums [P, D], scatter [D, D]) of spliced frames x [T, D] by their pdf."""
    D = x.shape[1]
    count, sums, scatter = np.zeros(num_pdfs), np.zeros((num_pdfs, D)), np.zeros((D, D))
    _lda_kernel(np.ascontiguousarray(x), ali.astype(np.int64), weight.astype(np.int8), count, sums, scatter)
    return count, sums, np.tril(scatter) + np.tril(scatter, -1).T


def estimate_lda(count: np.ndarray, sums: np.ndarray, scatter: np.ndarray, dim: int) -> np.ndarray:
    """Kaldi est-lda: the `dim` rows v maximising between- over within-class variance,
    scaled so that the within-class covariance becomes the identity: [dim, D]."""
    used = count > 0
    n, D = count.sum(), sums.shape[1]  # counts are whole numbers: their sum is exact
    if n == 0:
        raise AsrkdError("LDA: no aligned speech frame to estimate it from")
    if not 0 < dim <= D:
        raise AsrkdError(f"LDA dimension {dim}: must be 1 to the {D} dimensions of the spliced features")
    mean = _matmul(np.ones((1, len(sums))), sums)[0] / n
    class_means = sums[used] / count[used, None]
    between = _matmul((class_means - mean).T * count[used], class_means - mean) / n
    within = scatter / n - _matmul(mean[:, None], mean[None, :]) - between
    low = _cholesky(within)
    if low[0, 0] < 0:
        raise AsrkdError("LDA: the within-class covariance is singular or not finite (too few frames for the spliced "
                         "dimension, or NaN features)")
    linv = _inverse(low)
    w, v = _jacobi_eigh(_matmul(_matmul(linv, between), linv.T))
    order = np.argsort(-w, kind="stable")[:dim]
    return _matmul(v[:, order].T, linv)


@numba.njit(cache=True)
def _mllt_kernel(x, order, bounds, means, variances, a, b, c, weight, g, beta):
    """G_i += sum over frames and components of post / var_i * (x - mean)(x - mean)^T, pdf
    by pdf and frame by frame in time order (Kaldi MlltAccs; no pruning)."""
    P, K, D = means.shape
    ll, post = np.empty(K), np.empty(K)
    scat = np.zeros((K, D, D))
    for p in range(P):
        scat[:] = 0.0
        for i in range(bounds[p], bounds[p + 1]):
            t = order[i]
            if weight[t] == 0:
                continue
            top, tot = component_loglik(x, t, a, b, c, p, ll), 0.0
            for k in range(K):
                if c[p, k] > -np.inf:
                    tot += fpmath.exp(ll[k] - top)
            for k in range(K):
                post[k] = fpmath.exp(ll[k] - top) / tot if c[p, k] > -np.inf else 0.0
                if post[k] == 0.0:
                    continue
                beta[0] += post[k]
                for d in range(D):
                    od = np.float64(x[t, d]) - means[p, k, d]
                    for e in range(d + 1):
                        scat[k, d, e] += post[k] * od * (np.float64(x[t, e]) - means[p, k, e])
        for k in range(K):
            if c[p, k] == -np.inf:
                continue
            for i in range(D):
                inv = 1.0 / variances[p, k, i]
                for d in range(D):
                    for e in range(d + 1):
                        g[i, d, e] += inv * scat[k, d, e]


def mllt_stats(gmm, x: np.ndarray, ali: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, float]:
    """MLLT statistics G [D, D, D] (symmetric per i) and the frame count beta, from frames x
    aligned to pdfs `ali`, with the component posteriors of the current model."""
    P, K, D = gmm.means.shape
    order = np.argsort(ali, kind="stable")
    bounds = np.searchsorted(ali[order], np.arange(P + 1))
    a, b, c = _gauss_terms(gmm.means, gmm.vars, gmm.logw)
    g, beta = np.zeros((D, D, D)), np.zeros(1)
    _mllt_kernel(np.ascontiguousarray(x), order, bounds, gmm.means, gmm.vars, a, b, c, weight.astype(np.int8),
                 g, beta)
    for i in range(D):
        g[i] = np.tril(g[i]) + np.tril(g[i], -1).T
    return g, float(beta[0])


@numba.njit(cache=True)
def _mllt_update(g_inv, beta, iters):
    """Row-by-row maximisation of the MLLT objective from the identity (Gales 1999)."""
    D = g_inv.shape[0]
    a = np.eye(D)
    for _ in range(iters):
        for i in range(D):
            cof = _inverse(a)  # row i of inv(A)^T is the cofactor row up to a scale
            ci = cof[:, i].copy()
            tmp = np.zeros(D)
            for d in range(D):
                for e in range(D):
                    tmp[d] += ci[e] * g_inv[i, e, d]
            den = 0.0
            for d in range(D):
                den += tmp[d] * ci[d]
            scale = math.sqrt(beta / den)
            for d in range(D):
                a[i, d] = tmp[d] * scale
    return a


def mllt_objective(a: np.ndarray, g: np.ndarray, beta: float) -> float:
    """The MLLT auxiliary function beta log|det A| - 1/2 sum_i a_i G_i a_i^T (for reports)."""
    return float(beta * np.linalg.slogdet(a)[1] - 0.5 * sum(a[i] @ g[i] @ a[i] for i in range(len(a))))


def estimate_mllt(g: np.ndarray, beta: float, iters: int = 200) -> np.ndarray:
    """Kaldi est-mllt: the square transform A [D, D] from the statistics of `mllt_stats`."""
    g_inv = np.stack([_inverse(gi) for gi in g])
    if not np.isfinite(g_inv).all() or beta <= 0:
        raise AsrkdError("MLLT: singular statistics (no frames, or a dimension without variance)")
    a = _mllt_update(g_inv, beta, iters)
    gain = (mllt_objective(a, g, beta) - mllt_objective(np.eye(len(a)), g, beta)) / beta
    log.info("MLLT: objective improvement %.4f per frame over %.0f frames", gain, beta)
    return a


class FeatureTransform:
    """Splicing of the GMM's cepstra by `context` frames each side and a matrix [dim, spliced]."""

    def __init__(self, matrix: np.ndarray, context: int):
        self.matrix, self.context = np.ascontiguousarray(matrix, dtype=np.float64), context
        ceps = self.matrix.shape[1] / (2 * context + 1)
        if ceps != int(ceps):
            raise AsrkdError(f"transform [{self.matrix.shape[0]} x {self.matrix.shape[1]}]: its input is not "
                             f"{2 * context + 1} spliced frames")

    def splice(self, ceps: np.ndarray) -> np.ndarray:
        return splice(ceps, self.context, self.context)

    def __call__(self, ceps: np.ndarray) -> np.ndarray:
        """[T, dim] float32 features of cepstra [T, C]."""
        x = self.splice(ceps)
        if x.shape[1] != self.matrix.shape[1]:
            raise AsrkdError(f"transform expects {self.matrix.shape[1] // (2 * self.context + 1)} cepstra per "
                             f"frame, got {ceps.shape[1]}")
        out = np.empty((len(x), self.matrix.shape[0]), dtype=np.float32)
        _project(x, self.matrix, out)
        return out

    def compose(self, a: np.ndarray) -> "FeatureTransform":
        """The transform followed by a [dim, dim]."""
        return FeatureTransform(_matmul(a, self.matrix), self.context)

    def write(self, model_dir: Path) -> None:
        kaldiio.save_mat(str(Path(model_dir) / MATRIX), self.matrix)
        (Path(model_dir) / "splice_opts").write_text(f"--left-context={self.context} --right-context={self.context}\n")

    @classmethod
    def read(cls, model_dir: str | Path) -> "FeatureTransform | None":
        """The model dir's transform, or None (a system on cepstra with deltas)."""
        path = Path(model_dir) / MATRIX
        if not path.is_file():
            return None
        opts = Path(model_dir) / "splice_opts"
        if not opts.is_file():
            raise AsrkdError(f"{opts}: missing beside {MATRIX}")
        try:
            context = dict(o.lstrip("-").split("=", 1) for o in opts.read_text().split())
            left, right = int(context["left-context"]), int(context["right-context"])
        except (KeyError, ValueError):
            raise AsrkdError(f"{opts}: expected '--left-context=N --right-context=N'") from None
        if left != right:
            raise AsrkdError(f"{opts}: asrkd splices as many frames on each side, got {left} and {right}")
        try:
            matrix = kaldiio.load_mat(str(path))
        except Exception as e:  # kaldiio raises ValueError, RuntimeError or struct errors
            raise AsrkdError(f"{path}: not a Kaldi matrix ({type(e).__name__}: {e})") from None
        return cls(matrix, left)


def transform_means(gmm, a: np.ndarray) -> None:
    """Kaldi gmm-transform-means: every mean mu -> a mu (variances are re-estimated next)."""
    P, K, D = gmm.means.shape
    gmm.means = _matmul(gmm.means.reshape(P * K, D), a.T).reshape(P, K, D)
    gmm._terms = None

"""Feature-space MLLR (constrained MLLR, Gales 1998; Kaldi's gmm-est-fmllr): one affine
transform W = [A b] per speaker, x -> A x + b, that maximises the likelihood of the
speaker's frames under a diagonal-covariance GMM system, given their pdf alignment.

Statistics and the row-by-row update are float64 numba kernels in a fixed order, with no
BLAS or LAPACK, as everything else that feeds a GMM system (`asrkd.hmm.gmm`). The transforms
of a data dir live in `trans.ark` (Kaldi matrices [dim, dim + 1] by speaker), owned by
`SpeakerTransforms`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import kaldiio
import numba
import numpy as np

from asrkd.hmm import fpmath
from asrkd.hmm.gmm import _gauss_terms, _in_threads, component_loglik
from asrkd.hmm.transform import _inverse, _matmul, _project
from asrkd.utils import AsrkdError, atomic_file

log = logging.getLogger(__name__)
TRANSFORMS = "trans.ark"
MIN_COUNT = 50.0  # frames a speaker needs for a transform (Kaldi's --fmllr-min-count); fewer keep the identity


@numba.njit(nogil=True, cache=True)
def _stats_kernel(x, ali, weight, means, variances, a, b, c, beta, k_stats, g_stats):
    """beta += weight, K[i] += sum_k post_k mean_ki / var_ki * [x; 1] and G[i] += sum_k post_k /
    var_ki * [x; 1][x; 1]^T (lower triangle) over the frames of one speaker, in time order,
    with the component posteriors of each frame's pdf from the terms a, b, c of
    `_gauss_terms` (Kaldi FmllrDiagGmmAccs; gmm-est-fmllr-gpost where those are another model's)."""
    K, D = a.shape[1], x.shape[1]
    ll = np.empty(K)
    xi = np.empty(D + 1)
    s, kv = np.empty(D), np.empty(D)
    xi[D] = 1.0
    for t in range(x.shape[0]):
        w = weight[t]
        if w == 0.0:
            continue
        p = ali[t]
        top, tot = component_loglik(x, t, a, b, c, p, ll), 0.0
        for k in range(K):
            if c[p, k] > -np.inf:
                tot += fpmath.exp(ll[k] - top)
        s[:] = 0.0
        kv[:] = 0.0
        for k in range(K):
            if c[p, k] == -np.inf:
                continue
            post = w * fpmath.exp(ll[k] - top) / tot
            for i in range(D):
                inv = post / variances[p, k, i]
                s[i] += inv
                kv[i] += inv * means[p, k, i]
        beta[0] += w
        for d in range(D):
            xi[d] = np.float64(x[t, d])
        for i in range(D):
            for j in range(D + 1):
                k_stats[i, j] += kv[i] * xi[j]
                for e in range(j + 1):
                    g_stats[i, j, e] += s[i] * xi[j] * xi[e]


def fmllr_stats(gmm, x: np.ndarray, ali: np.ndarray, weight: np.ndarray,
                post_gmm=None) -> tuple[float, np.ndarray, np.ndarray]:
    """(beta, K [D, D + 1], G [D, D + 1, D + 1]) of one speaker's frames x [T, D] aligned to
    pdfs `ali`, each frame weighted by `weight` (0: left out, e.g. silence), for the Gaussians
    of `gmm` with the component posteriors of `post_gmm` (a SAT system's alignment model,
    whose components are gmm's) or of `gmm` itself."""
    D = gmm.dim
    if x.shape[1] != D:
        raise AsrkdError(f"fMLLR: features of {x.shape[1]} dimensions for GMMs of {D}")
    beta, k_stats, g_stats = np.zeros(1), np.zeros((D, D + 1)), np.zeros((D, D + 1, D + 1))
    post_gmm = post_gmm or gmm
    if post_gmm.means.shape != gmm.means.shape:
        raise AsrkdError("fMLLR: the alignment model's Gaussians are not the model's")
    a, b, c = _gauss_terms(post_gmm.means, post_gmm.vars, post_gmm.logw)
    _stats_kernel(np.ascontiguousarray(x), ali.astype(np.int64), weight.astype(np.float64), gmm.means, gmm.vars,
                  a, b, c, beta, k_stats, g_stats)
    for i in range(D):
        g_stats[i] = np.tril(g_stats[i]) + np.tril(g_stats[i], -1).T
    return float(beta[0]), k_stats, g_stats


@numba.njit(cache=True)
def _dot(u, m, v):
    """u^T m v, summed in index order."""
    s = 0.0
    for i in range(len(u)):
        row = 0.0
        for j in range(len(v)):
            row += m[i, j] * v[j]
        s += u[i] * row
    return s


@numba.njit(nogil=True, cache=True)
def _fmllr_update(beta, k_stats, g_inv, iters):
    """Row-by-row maximisation of beta log|det A| + sum_i (w_i k_i - 1/2 w_i G_i w_i^T) from the
    identity (Gales 1998; Kaldi ComputeFmllrMatrixDiagGmmFull): w_i = (alpha p_i + k_i) G_i^-1,
    p_i the cofactor row of A (up to a scale, row i of inv(A)^T) and alpha the root of
    e1 alpha^2 + e2 alpha - beta = 0 with the higher objective."""
    D = k_stats.shape[0]
    w = np.zeros((D, D + 1))
    for i in range(D):
        w[i, i] = 1.0
    p = np.zeros(D + 1)
    for _ in range(iters):
        for i in range(D):
            inv = _inverse(w[:, :D].copy())
            for j in range(D):
                p[j] = inv[j, i]
            e1 = _dot(p, g_inv[i], p)
            e2 = _dot(k_stats[i], g_inv[i], p)
            disc = math.sqrt(e2 * e2 + 4.0 * e1 * beta)
            best, alpha = -np.inf, 0.0
            for root in ((-e2 + disc) / (2.0 * e1), (-e2 - disc) / (2.0 * e1)):
                obj = beta * fpmath.log(abs(root * e1 + e2)) - 0.5 * root * root * e1
                if obj > best:
                    best, alpha = obj, root
            for j in range(D + 1):
                s = 0.0
                for m in range(D + 1):
                    s += (alpha * p[m] + k_stats[i, m]) * g_inv[i, m, j]
                w[i, j] = s
    return w


def fmllr_objective(w: np.ndarray, beta: float, k_stats: np.ndarray, g_stats: np.ndarray) -> float:
    """beta log|det A| + sum_i (w_i k_i - 1/2 w_i G_i w_i^T), for the log only (numpy's BLAS:
    no result depends on it)."""
    quad = sum(w[i] @ k_stats[i] - 0.5 * w[i] @ g_stats[i] @ w[i] for i in range(len(w)))
    return float(beta * np.linalg.slogdet(w[:, :-1])[1] + quad)


def identity(dim: int) -> np.ndarray:
    """The fMLLR transform that changes nothing: [I 0]."""
    return np.hstack([np.eye(dim), np.zeros((dim, 1))])


def estimate_fmllr(beta: float, k_stats: np.ndarray, g_stats: np.ndarray, iters: int = 40,
                   min_count: float = MIN_COUNT) -> np.ndarray:
    """The fMLLR transform [D, D + 1] of one speaker's statistics; the identity below
    `min_count` frames (weighted) or where the statistics are singular."""
    if beta < min_count:
        return identity(k_stats.shape[0])
    g_inv = np.stack([_inverse(g) for g in g_stats])
    w = _fmllr_update(beta, k_stats, g_inv, iters) if np.isfinite(g_inv).all() else None
    return w if w is not None and np.isfinite(w).all() else identity(k_stats.shape[0])


def speaker_fmllr(gmm, feats: dict[str, np.ndarray], ali: dict[str, np.ndarray], pdf_weight: np.ndarray,
                  utt2spk: dict[str, str], post_gmm=None,
                  min_count: float = MIN_COUNT) -> tuple[dict[str, np.ndarray], float]:
    """The fMLLR transform of every speaker with an utterance in `ali` (each frame weighted by
    its pdf's `pdf_weight`, e.g. 0 for silence; component posteriors of `post_gmm`, see
    `fmllr_stats`), estimated on threads (one speaker each): returns ({speaker: W},
    objective improvement per weighted frame)."""
    speakers: dict[str, list[str]] = {}
    for utt in ali:
        speakers.setdefault(utt2spk[utt], []).append(utt)
    names = sorted(speakers)
    out, gains = {}, {}

    def one(spk):
        utts = speakers[spk]
        x = np.concatenate([feats[u] for u in utts])
        a = np.concatenate([ali[u] for u in utts])
        beta, k_stats, g_stats = fmllr_stats(gmm, x, a, pdf_weight[a], post_gmm)
        w = estimate_fmllr(beta, k_stats, g_stats, min_count=min_count)
        out[spk] = w
        gains[spk] = (fmllr_objective(w, beta, k_stats, g_stats) - fmllr_objective(
            identity(len(w)), beta, k_stats, g_stats), beta)
    _in_threads(one, [(s,) for s in names])
    frames = math.fsum(gains[s][1] for s in names)
    gain = math.fsum(gains[s][0] for s in names) / frames if frames else 0.0
    log.info("fMLLR: %d speakers, objective improvement %.4f per frame over %.0f frames", len(names), gain, frames)
    return {s: out[s] for s in names}, gain


def compose(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """The affine transform `old` followed by `new` (Kaldi compose-transforms --b-is-affine)."""
    D = new.shape[0]
    old_h = np.vstack([old, np.eye(1, D + 1, D)])
    return _matmul(new, old_h)


def apply_fmllr(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """[T, D] float32 frames A x + b, each sum in index order."""
    xi = np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)])
    out = np.empty((len(x), w.shape[0]), dtype=np.float32)
    _project(np.ascontiguousarray(xi), np.ascontiguousarray(w, dtype=np.float64), out)
    return out


class SpeakerTransforms:
    """The per-speaker fMLLR transforms of a data dir: `trans.ark` (Kaldi matrices [dim,
    dim + 1] keyed by speaker) in a model, alignment or decode dir, and the data dir's utt2spk."""

    def __init__(self, transforms: dict[str, np.ndarray], utt2spk: dict[str, str]):
        self.transforms, self.utt2spk = transforms, utt2spk

    def __call__(self, utt: str, x: np.ndarray) -> np.ndarray:
        spk = self.utt2spk.get(utt)
        if spk not in self.transforms:
            raise AsrkdError(f"{utt}: no fMLLR transform for its speaker {spk}")
        w = self.transforms[spk]
        if w.shape != (x.shape[1], x.shape[1] + 1):
            raise AsrkdError(f"fMLLR transform of speaker {spk} is {w.shape[0]} x {w.shape[1]}, the features have "
                             f"{x.shape[1]} dimensions")
        return apply_fmllr(w, x)

    def write(self, out_dir: str | Path) -> None:
        with atomic_file(Path(out_dir) / TRANSFORMS, "wb") as f:
            kaldiio.save_ark(f, {s: self.transforms[s] for s in sorted(self.transforms)})

    @classmethod
    def read(cls, path: str | Path, utt2spk: dict[str, str]) -> "SpeakerTransforms":
        """The transforms of a dir holding `trans.ark` (or of the file itself)."""
        path = Path(path)
        path = path / TRANSFORMS if path.is_dir() else path
        if not path.is_file():
            raise AsrkdError(f"{path}: missing (no fMLLR transforms)")
        try:
            transforms = {k: np.asarray(v, dtype=np.float64) for k, v in kaldiio.load_ark(str(path))}
        except Exception as e:  # kaldiio raises ValueError, RuntimeError or struct errors
            raise AsrkdError(f"{path}: not a Kaldi archive of matrices ({type(e).__name__}: {e})") from None
        return cls(transforms, utt2spk)

"""Diagonal-covariance GMMs for all pdfs at once, with arithmetic that gives the same bits
on every x86-64 CPU and with any number of threads.

Means, variances and log-weights are float64 arrays padded to [num_pdfs, max_gauss, dim];
unused components have log-weight -inf. Every number that feeds an alignment, a Gaussian
split or a parameter is computed in float64 by the numba kernels below: each output element
in a fixed order of operations, with no BLAS, no fast-math and no SIMD-width-dependent
reduction, and threads that only divide frames or pdfs between them. Log-likelihoods are
handed to the decoders as float32. docs/reproducibility.md says what this costs and covers.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

from asrkd.hmm import fpmath
from asrkd.hmm.fpmath import LN2, LOG_2PI
from asrkd.utils import AsrkdError

CHUNK = 256  # Gaussians scored together (whole pdfs), so that their sums stay in the L1 cache


@numba.njit(cache=True)
def _gauss_terms(means, variances, logw):
    """Per component, a = -0.5 / var and b = mean / var [P, K, D], and the constant c [P, K]
    (log-weight and normaliser), so that log N(x) + log w = c + sum_d (x_d^2 a_d + x_d b_d)."""
    P, K, D = means.shape
    a, b, c = np.empty_like(means), np.empty_like(means), np.empty((P, K))
    for p in range(P):
        for k in range(K):
            s = D * LOG_2PI
            for d in range(D):
                inv = 1.0 / variances[p, k, d]
                a[p, k, d] = -0.5 * inv
                b[p, k, d] = means[p, k, d] * inv
                s += fpmath.log(variances[p, k, d]) + means[p, k, d] * means[p, k, d] * inv
            c[p, k] = logw[p, k] - 0.5 * s
    return a, b, c


@numba.njit(cache=True)
def _chunk_logsumexp(ll, k, n, top, out):
    """out[j] = log sum_i exp(ll[i * n + j]) over the k components i of each of n pdfs (ll is
    overwritten). Every loop runs across pdfs, so that the compiler vectorises it; each
    pdf's sum is taken in component order."""
    top[:n] = ll[:n]
    for i in range(1, k):
        for j in range(n):
            top[j] = max(top[j], ll[i * n + j])
    for i in range(k):
        for j in range(n):
            ll[i * n + j] = fpmath.exp(ll[i * n + j] - top[j])
    for i in range(1, k):
        for j in range(n):
            ll[j] += ll[i * n + j]
    for j in range(n):
        out[j] = top[j] + fpmath.log_normal(ll[j])


@numba.njit(nogil=True, cache=True)
def _loglik_kernel(x, a, b, c, chunks, pdfs, out):
    """out[t, p] = log sum over the live components g of pdf p of exp(c_g + sum_d (x_td^2 a_dg
    + x_td b_dg)), for [D, G] matrices a, b. Chunk i (a row of chunks: first column g0, number
    of components k, first index p0 into pdfs, number of pdfs n) holds the k components of
    the pdfs pdfs[p0:p0+n] in columns g0:g0+k*n, component-major. Four frames at a time."""
    T, D = x.shape
    width = int((chunks[:, 1] * chunks[:, 3]).max())
    acc, top, res = np.empty((4, width)), np.empty(width), np.empty(width)
    for t0 in range(0, T, 4):
        t1, t2, t3 = min(t0 + 1, T - 1), min(t0 + 2, T - 1), min(t0 + 3, T - 1)
        for g0, k, p0, n in chunks:
            g1 = g0 + k * n
            l0, l1, l2, l3 = acc[0, :g1 - g0], acc[1, :g1 - g0], acc[2, :g1 - g0], acc[3, :g1 - g0]
            l0[:], l1[:], l2[:], l3[:] = c[g0:g1], c[g0:g1], c[g0:g1], c[g0:g1]
            for d in range(D):
                x0, x1, x2, x3 = np.float64(x[t0, d]), np.float64(x[t1, d]), np.float64(x[t2, d]), np.float64(x[t3, d])
                q0, q1, q2, q3 = x0 * x0, x1 * x1, x2 * x2, x3 * x3
                ad, bd = a[d, g0:g1], b[d, g0:g1]
                for g in range(g1 - g0):
                    l0[g] += q0 * ad[g] + x0 * bd[g]
                    l1[g] += q1 * ad[g] + x1 * bd[g]
                    l2[g] += q2 * ad[g] + x2 * bd[g]
                    l3[g] += q3 * ad[g] + x3 * bd[g]
            for j in range(min(4, T - t0)):
                _chunk_logsumexp(acc[j], k, n, top, res)
                for i in range(n):
                    out[t0 + j, pdfs[p0 + i]] = res[i]


@numba.njit(nogil=True, cache=True)
def component_loglik(x, t, a, b, c, p, ll):
    """ll[k] = log w_k + log N(x[t]) of each component k of pdf p (-inf where unused), from
    `_gauss_terms`; returns the largest."""
    top = -np.inf
    for k in range(ll.shape[0]):
        s = c[p, k]
        if s > -np.inf:
            for d in range(x.shape[1]):
                xd = np.float64(x[t, d])
                s += xd * xd * a[p, k, d] + xd * b[p, k, d]
        ll[k] = s
        top = max(top, s)
    return top


@numba.njit(nogil=True, cache=True)
def _accumulate_kernel(x, y, order, bounds, a, b, c, p0, p1, occ, m1, m2, frame_ll):
    """Statistics of the frames y aligned to each pdf p0..p1-1, weighted by the component
    posteriors of the frames x (the same frames, or their adapted version), frame by frame in
    time order; frame_ll[t] gets the log-likelihood of x[t] under its pdf."""
    K, D = a.shape[1:]
    ll = np.empty(K)
    for p in range(p0, p1):
        for i in range(bounds[p], bounds[p + 1]):
            t = order[i]
            top, tot = component_loglik(x, t, a, b, c, p, ll), 0.0
            for k in range(K):
                if c[p, k] > -np.inf:
                    tot += fpmath.exp(ll[k] - top)
            tot = top + fpmath.log(tot)
            frame_ll[t] = tot
            for k in range(K):
                if c[p, k] > -np.inf:
                    post = fpmath.exp(ll[k] - tot)
                    occ[p, k] += post
                    for d in range(D):
                        yd = np.float64(y[t, d])
                        m1[p, k, d] += post * yd
                        m2[p, k, d] += post * yd * yd


@numba.njit(cache=True)
def _row_sums(v):
    out = np.zeros(v.shape[0])
    for i in range(v.shape[0]):
        for j in range(v.shape[1]):
            out[i] += v[i, j]
    return out


@numba.njit(cache=True)
def _log(v):
    out = np.empty_like(v)
    for i in range(v.shape[0]):
        for j in range(v.shape[1]):
            out[i, j] = fpmath.log(v[i, j])
    return out


@numba.njit(cache=True)
def _mixup_share(occ_per_pdf, power, target):
    """Gaussians due to each pdf: target * occ**power / sum(occ**power), summed in pdf order."""
    alloc = np.empty_like(occ_per_pdf)
    total = 0.0
    for p in range(len(alloc)):
        alloc[p] = fpmath.exp(power * fpmath.log(occ_per_pdf[p])) if occ_per_pdf[p] > 0 else 0.0
        total += alloc[p]
    return alloc / total * target


def _in_threads(fn, parts: list[tuple]) -> None:
    """fn(*part) for every part, on torch's number of intra-op threads (numba kernels release
    the GIL); each part writes its own slice of the outputs, so the result is the same with
    any number of threads. Python threads, unlike OpenMP's, leave fork() safe afterwards."""
    threads = min(torch.get_num_threads(), len(parts))
    if threads <= 1:
        for part in parts:
            fn(*part)
        return
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(fn, *part) for part in parts]:
            future.result()


def _split(weights: np.ndarray, parts: int) -> np.ndarray:
    """Boundaries [parts + 1] cutting range(len(weights)) into parts of about equal weight."""
    cum = np.concatenate([[0], np.cumsum(weights)])
    return np.unique(np.searchsorted(cum, np.linspace(0, cum[-1], parts + 1)[1:-1], side="right").tolist()
                     + [0, len(weights)])


def _array(v) -> np.ndarray:
    return np.array(v.detach().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float64)


class DiagGmmSet:
    def __init__(self, means, variances, log_weights):
        self.means, self.vars, self.logw = _array(means), _array(variances), _array(log_weights)
        self._terms = None  # cached by _scoring_terms until the parameters change

    @classmethod
    def single(cls, mean, var, num_pdfs: int) -> "DiagGmmSet":
        """Every pdf one Gaussian with the given (global) mean and variance: the flat start."""
        m = np.broadcast_to(_array(mean), (num_pdfs, 1, len(mean)))
        v = np.broadcast_to(_array(var), (num_pdfs, 1, len(var)))
        return cls(m, v, np.zeros((num_pdfs, 1)))

    @property
    def dim(self) -> int:
        return self.means.shape[2]

    def num_gauss(self) -> int:
        return int(np.isfinite(self.logw).sum())

    def _scoring_terms(self):
        """(a [D, G], b [D, G], c [G], chunks [N, 4], pdfs [P]) of `_loglik_kernel`: pdfs with
        the same number k of live components, in chunks of at most CHUNK Gaussians."""
        if self._terms is None:
            a, b, c = _gauss_terms(self.means, self.vars, self.logw)
            live = np.isfinite(self.logw)
            count = live.sum(1)
            cols, chunks, pdfs, g0 = [], [], [], 0
            for k in np.unique(count[count > 0]).tolist():
                group = np.flatnonzero(count == k)
                comp = np.argsort(~live[group], axis=1, kind="stable")[:, :k]  # live components, in order
                for i in range(0, len(group), max(1, CHUNK // k)):
                    rows = group[i:i + max(1, CHUNK // k)]
                    chunks.append((g0, k, len(pdfs), len(rows)))
                    g0 += k * len(rows)
                    cols.append((rows[None, :], comp[i:i + len(rows)].T))  # component-major
                    pdfs += rows.tolist()
            p = np.concatenate([np.broadcast_to(r, q.shape).ravel() for r, q in cols])
            q = np.concatenate([q.ravel() for _, q in cols])
            self._terms = (np.ascontiguousarray(a[p, q].T), np.ascontiguousarray(b[p, q].T), c[p, q],
                           np.array(chunks, dtype=np.int64), np.array(pdfs, dtype=np.int64))
        return self._terms

    def loglik(self, x) -> np.ndarray:
        """[T, num_pdfs] float32 log-likelihoods of frames x [T, dim] (float32 or float64)."""
        x = np.ascontiguousarray(x.numpy() if isinstance(x, torch.Tensor) else x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise AsrkdError(f"features of {x.shape[-1]} dimensions for GMMs of {self.dim} (another system's "
                             "features? an LDA+MLLT model needs its final.mat)")
        out = np.full((x.shape[0], self.means.shape[0]), -np.inf, dtype=np.float32)
        terms = self._scoring_terms()
        cuts = _split(np.ones(len(x)), max(1, min(torch.get_num_threads(), len(x) // 64)))
        _in_threads(_loglik_kernel, [(x[lo:hi], *terms, out[lo:hi]) for lo, hi in zip(cuts, cuts[1:])])
        return out

    def accumulate(self, x: np.ndarray, pdf_ali: np.ndarray, stats_x: np.ndarray | None = None):
        """Sufficient statistics (occupancy, first and second order) given a frame->pdf alignment:
        of the frames x, or of `stats_x` with the posteriors of x (Kaldi gmm-acc-stats-twofeats).

        Returns (occ [P, K], m1 [P, K, D], m2 [P, K, D], total log-likelihood of x), float64.
        """
        P, K, D = self.means.shape
        x = np.ascontiguousarray(x)
        y = x if stats_x is None else np.ascontiguousarray(stats_x)
        if y.shape != x.shape:
            raise AsrkdError(f"statistics of frames {y.shape} with the posteriors of frames {x.shape}")
        occ, m1, m2 = np.zeros((P, K)), np.zeros((P, K, D)), np.zeros((P, K, D))
        order = np.argsort(pdf_ali, kind="stable")
        bounds = np.searchsorted(pdf_ali[order], np.arange(P + 1))
        frame_ll = np.zeros(len(pdf_ali))
        args = (x, y, order, bounds, *_gauss_terms(self.means, self.vars, self.logw))
        cuts = _split(np.diff(bounds), 4 * torch.get_num_threads())  # pdfs, by their frames
        _in_threads(_accumulate_kernel, [(*args, lo, hi, occ, m1, m2, frame_ll) for lo, hi in zip(cuts, cuts[1:])])
        return occ, m1, m2, math.fsum(frame_ll)

    def update(self, occ, m1, m2, var_floor, min_occ: float = 10.0) -> None:
        """Maximum-likelihood re-estimation; components with occupancy < min_occ are dropped
        (the heaviest of each pdf is always kept), variances floored at var_floor."""
        occ, m1, m2, var_floor = _array(occ), _array(m1), _array(m2), _array(var_floor)
        keep = occ >= min_occ
        keep[np.arange(occ.shape[0]), occ.argmax(1)] = True
        keep &= occ > 0
        safe = np.maximum(occ, 1e-10)[..., None]
        mean = m1 / safe
        var = np.maximum(m2 / safe - mean**2, var_floor)
        tot = _row_sums(occ)
        seen = tot > 0  # pdfs with no frames keep their old parameters
        tot = np.maximum(tot, 1e-10)
        logw = np.where(keep, _log(np.maximum(occ, 1e-300) / tot[:, None]), -np.inf)
        self.means[seen] = np.where(keep[seen, :, None], mean[seen], self.means[seen])
        self.vars[seen] = np.where(keep[seen, :, None], var[seen], self.vars[seen])
        self.logw[seen] = logw[seen]
        self._terms = None

    def mix_up(self, target: int, occ, power: float = 0.2, perturb: float = 0.2) -> None:
        """Kaldi gmm-mixup: split the heaviest components until the total reaches `target`,
        allotting Gaussians to pdfs in proportion to occupancy**power. `occ` is per pdf [P]
        or per component [P, K] (summed over components)."""
        occ = _array(occ)
        share = _mixup_share(_row_sums(occ) if occ.ndim == 2 else occ, power, float(target))
        have = np.isfinite(self.logw).sum(1)
        want = np.maximum(np.maximum(np.round(share), 1).astype(np.int64), have)  # a pdf never loses Gaussians
        excess = int(want.sum()) - max(target, int(have.sum()))
        while excess > 0:  # rounding passed the target: take back where it rounded up most
            over = np.where(want > have, want - share, -np.inf)
            k = min(excess, int((want > have).sum()))
            want[np.argsort(-over, kind="stable")[:k]] -= 1
            excess -= k
        kmax = int(want.max())
        if kmax > self.means.shape[1]:
            pad = kmax - self.means.shape[1]
            P, _, D = self.means.shape
            self.means = np.concatenate([self.means, np.zeros((P, pad, D))], 1)
            self.vars = np.concatenate([self.vars, np.ones((P, pad, D))], 1)
            self.logw = np.concatenate([self.logw, np.full((P, pad), -np.inf)], 1)
        for p in np.flatnonzero(want > have).tolist():
            for _ in range(int(want[p] - np.isfinite(self.logw[p]).sum())):
                k = int(self.logw[p].argmax())
                new = int(np.flatnonzero(~np.isfinite(self.logw[p]))[0])
                offset = perturb * np.sqrt(self.vars[p, k])
                self.means[p, new] = self.means[p, k] + offset
                self.means[p, k] = self.means[p, k] - offset
                self.vars[p, new] = self.vars[p, k]
                self.logw[p, k] = self.logw[p, new] = self.logw[p, k] - LN2
        self._terms = None

    def state_dict(self) -> dict:
        return {"means": torch.from_numpy(self.means.copy()), "vars": torch.from_numpy(self.vars.copy()),
                "logw": torch.from_numpy(self.logw.copy())}

"""Diagonal-covariance GMMs for all pdfs at once, in torch, with vectorised statistics.

Means, variances and log-weights are padded to [num_pdfs, max_gauss, dim]; unused
components have log-weight -inf. Log-likelihoods of a frame batch for every pdf are one
matrix product per group of pdfs with the same number of live components, and a logsumexp.
"""

from __future__ import annotations

import math

import numpy as np
import torch

LOG_2PI = math.log(2 * math.pi)


class DiagGmmSet:
    def __init__(self, means: torch.Tensor, variances: torch.Tensor, log_weights: torch.Tensor):
        self.means, self.vars, self.logw = means.double(), variances.double(), log_weights.double()

    @classmethod
    def single(cls, mean: np.ndarray, var: np.ndarray, num_pdfs: int) -> "DiagGmmSet":
        """Every pdf one Gaussian with the given (global) mean and variance: the flat start."""
        m = torch.as_tensor(mean, dtype=torch.float64).expand(num_pdfs, 1, -1).clone()
        v = torch.as_tensor(var, dtype=torch.float64).expand(num_pdfs, 1, -1).clone()
        return cls(m, v, torch.zeros(num_pdfs, 1, dtype=torch.float64))

    @property
    def dim(self) -> int:
        return self.means.shape[2]

    def num_gauss(self) -> int:
        return int(torch.isfinite(self.logw).sum())

    def _terms(self, pdfs=slice(None)):
        inv = 1.0 / self.vars[pdfs]
        const = self.logw[pdfs] - 0.5 * (self.dim * LOG_2PI + torch.log(self.vars[pdfs]).sum(-1)
                                         + (self.means[pdfs] ** 2 * inv).sum(-1))
        return inv, self.means[pdfs] * inv, const

    def component_loglik(self, x: torch.Tensor, pdf: int) -> torch.Tensor:
        """[N, K] weighted component log-likelihoods of frames x under one pdf."""
        inv, minv, const = self._terms(pdf)
        x = x.double()
        return const - 0.5 * (x**2) @ inv.T + x @ minv.T

    def loglik(self, x: np.ndarray | torch.Tensor, chunk: int = 4096) -> np.ndarray:
        """[T, num_pdfs] float32 log-likelihoods. Pdfs are grouped by their number of live
        components, so the padding to max_gauss costs nothing."""
        inv, minv, const = self._terms()
        live = torch.isfinite(self.logw)
        order = torch.argsort((~live).to(torch.int8), dim=1, stable=True)  # live components first
        groups = []
        for k in torch.unique(live.sum(1)).tolist():
            pdfs = torch.nonzero(live.sum(1) == k).flatten()
            comp = order[pdfs, :k]
            rows = pdfs[:, None]
            w = torch.cat([-0.5 * inv[rows, comp], minv[rows, comp]], -1).reshape(len(pdfs) * k, -1).T.float()
            groups.append((pdfs, k, w.contiguous(), const[rows, comp].reshape(-1).float()))
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        out = torch.empty(x.shape[0], self.means.shape[0])
        with torch.no_grad():
            for i in range(0, x.shape[0], chunk):
                xb = x[i:i + chunk]
                feats = torch.cat([xb**2, xb], 1)
                for pdfs, k, w, c in groups:
                    ll = torch.addmm(c, feats, w)
                    out[i:i + chunk, pdfs] = torch.logsumexp(ll.view(len(xb), len(pdfs), k), dim=-1)
        return out.numpy()

    def accumulate(self, x: np.ndarray, pdf_ali: np.ndarray):
        """Sufficient statistics (occupancy, first and second order) given a frame->pdf alignment.

        Returns (occ [P, K], m1 [P, K, D], m2 [P, K, D], total log-likelihood).
        """
        P, K, D = self.means.shape
        occ, m1, m2 = torch.zeros(P, K, dtype=torch.float64), torch.zeros(P, K, D, dtype=torch.float64), \
            torch.zeros(P, K, D, dtype=torch.float64)
        order = np.argsort(pdf_ali, kind="stable")
        bounds = np.searchsorted(pdf_ali[order], np.arange(P + 1))
        xt = torch.as_tensor(x, dtype=torch.float64)
        total = 0.0
        for p in range(P):
            idx = order[bounds[p]:bounds[p + 1]]
            if len(idx) == 0:
                continue
            xp = xt[idx]
            ll = self.component_loglik(xp, p)
            frame_ll = torch.logsumexp(ll, dim=1, keepdim=True)
            total += float(frame_ll.sum())
            post = torch.exp(ll - frame_ll)
            occ[p] = post.sum(0)
            m1[p] = post.T @ xp
            m2[p] = post.T @ (xp**2)
        return occ, m1, m2, total

    def update(self, occ, m1, m2, var_floor: torch.Tensor, min_occ: float = 10.0) -> None:
        """Maximum-likelihood re-estimation; components with occupancy < min_occ are dropped
        (the heaviest of each pdf is always kept), variances floored at var_floor."""
        keep = occ >= min_occ
        keep[torch.arange(occ.shape[0]), occ.argmax(1)] = True
        keep &= occ > 0
        safe = occ.clamp_min(1e-10).unsqueeze(-1)
        mean = m1 / safe
        var = torch.maximum(m2 / safe - mean**2, var_floor)
        seen = occ.sum(1) > 0  # pdfs with no frames keep their old parameters
        tot = occ.sum(1, keepdim=True).clamp_min(1e-10)
        logw = torch.where(keep, torch.log(occ.clamp_min(1e-300) / tot), torch.tensor(-math.inf, dtype=torch.float64))
        self.means[seen] = torch.where(keep[seen].unsqueeze(-1), mean[seen], self.means[seen])
        self.vars[seen] = torch.where(keep[seen].unsqueeze(-1), var[seen], self.vars[seen])
        self.logw[seen] = logw[seen]

    def mix_up(self, target: int, occ_per_pdf: torch.Tensor, power: float = 0.2, perturb: float = 0.2) -> None:
        """Kaldi gmm-mixup: split the heaviest components until the total reaches `target`,
        allotting Gaussians to pdfs in proportion to occupancy**power."""
        alloc = occ_per_pdf.clamp_min(0) ** power
        share = alloc / alloc.sum() * target
        have = torch.isfinite(self.logw).sum(1)
        want = torch.maximum(torch.clamp(share.round().long(), min=1), have)  # a pdf never loses Gaussians
        excess = int(want.sum()) - max(target, int(have.sum()))
        while excess > 0:  # rounding passed the target: take back where it rounded up most
            over = torch.where(want > have, want - share, torch.full_like(share, -math.inf))
            k = min(excess, int((want > have).sum()))
            want[torch.argsort(over, descending=True)[:k]] -= 1
            excess -= k
        kmax = int(want.max())
        if kmax > self.means.shape[1]:
            pad = kmax - self.means.shape[1]
            P, _, D = self.means.shape
            self.means = torch.cat([self.means, torch.zeros(P, pad, D, dtype=torch.float64)], 1)
            self.vars = torch.cat([self.vars, torch.ones(P, pad, D, dtype=torch.float64)], 1)
            self.logw = torch.cat([self.logw, torch.full((P, pad), -math.inf, dtype=torch.float64)], 1)
        for p in torch.nonzero(want > have).flatten().tolist():
            for _ in range(int(want[p] - torch.isfinite(self.logw[p]).sum())):
                k = int(self.logw[p].argmax())
                new = int(torch.nonzero(~torch.isfinite(self.logw[p]))[0])
                offset = perturb * self.vars[p, k].sqrt()
                self.means[p, new] = self.means[p, k] + offset
                self.means[p, k] = self.means[p, k] - offset
                self.vars[p, new] = self.vars[p, k]
                self.logw[p, k] = self.logw[p, new] = self.logw[p, k] - math.log(2)

    def state_dict(self) -> dict:
        return {"means": self.means, "vars": self.vars, "logw": self.logw}

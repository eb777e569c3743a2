"""Training losses of a senone classifier: cross-entropy to the hard (forced-alignment)
targets, distillation (Hinton et al. 2015) to stored soft targets, and distillation to
teachers run on each minibatch's windows, mixed up in pairs (function matching, Beyer et
al. 2022). Each is T^2 KL(soft_T || student_T) + hard_weight * CE(hard) where it distils."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from asrkd.nnet.config import NnetConfig
from asrkd.nnet.data import FrameSet
from asrkd.nnet.soft_targets import average_posteriors, tail_probability
from asrkd.utils import AsrkdError


def distillation_loss(logits: torch.Tensor, soft_ids: torch.Tensor, soft_probs: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """T^2 * KL(q || softmax(z/T)) averaged over frames. q is the teacher's top k (ids, probs)
    with the rest of its mass spread evenly over the other senones (`tail_probability`).
    The T^2 keeps the gradient's size independent of T (it scales as 1/T^2)."""
    logp = torch.log_softmax(logits / temperature, -1)
    top = (torch.xlogy(soft_probs, soft_probs) - soft_probs * logp.gather(1, soft_ids)).sum(1)
    tail = tail_probability(soft_probs, logits.shape[-1])
    rest = logp.sum(1) - logp.gather(1, soft_ids).sum(1)  # sum of log p over the other senones
    others = logits.shape[-1] - soft_ids.shape[1]
    return temperature**2 * (top + others * torch.xlogy(tail, tail) - tail * rest).mean()


def dense_distillation_loss(logits: torch.Tensor, teacher_logq: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(q || softmax(z/T)) averaged over frames, q given densely as log-probabilities."""
    q = teacher_logq.exp()
    return temperature**2 * (torch.xlogy(q, q) - q * torch.log_softmax(logits / temperature, -1)).sum(1).mean()


def mixup(x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each window mixed with another of the minibatch (Zhang et al. 2018): lam x + (1 - lam)
    x[perm], lam ~ Beta(alpha, alpha) per window. Returns the mix, lam and perm."""
    lam = torch.distributions.Beta(alpha, alpha).sample((len(x),)).to(x.device)
    perm = torch.randperm(len(x)).to(x.device)
    return lam[:, None] * x + (1 - lam[:, None]) * x[perm], lam, perm


def online_loss(logits: torch.Tensor, x: torch.Tensor, teachers: list[torch.nn.Module], hard: torch.Tensor,
                cfg: NnetConfig, mix: tuple | None = None) -> torch.Tensor:
    """Distillation from `teachers` run on the student's own input windows `x`: the KD loss
    against their averaged softmax(z/T) (as stored soft targets average them), plus the
    hard-target cross-entropy, mixed as the windows were (`mix`: lam, perm)."""
    with torch.no_grad():  # the teachers' weights are cast once (bf16 with cfg.precision bf16)
        dtype = next(teachers[0].parameters()).dtype
        logq = average_posteriors([m(x.to(dtype)) for m in teachers], cfg.temperature, cfg.ensemble_mean)
    loss = dense_distillation_loss(logits, logq, cfg.temperature)
    if cfg.hard_weight > 0:
        ce = F.cross_entropy(logits, hard, reduction="none")
        if mix is not None:
            lam, perm = mix
            ce = lam * ce + (1 - lam) * F.cross_entropy(logits, hard[perm], reduction="none")
        loss = loss + cfg.hard_weight * ce.mean()
    return loss


@dataclass
class Batch:
    """What a loss may use of one minibatch: its frames' indices into `data`, their input
    windows `x` (as the student saw them: mixed up by `mix` = (lam, perm) if at all), their
    hard targets, the stored soft targets' teacher drawn for it, and teacher models."""

    data: FrameSet
    idx: torch.Tensor
    x: torch.Tensor
    hard: torch.Tensor
    teacher: int = 0
    teachers: list | None = None
    mix: tuple | None = None


def cross_entropy(logits: torch.Tensor, b: Batch, cfg: NnetConfig) -> torch.Tensor:
    """Cross-entropy to the hard targets (a member, the baseline)."""
    return F.cross_entropy(logits, b.hard)


def stored_distillation(logits: torch.Tensor, b: Batch, cfg: NnetConfig) -> torch.Tensor:
    """KD to the stored soft targets of teacher `b.teacher` (teacher switching draws one per
    minibatch, Fukuda et al. 2017) plus `hard_weight` times the cross-entropy."""
    ce = F.cross_entropy(logits, b.hard)
    ids, probs = b.data.soft_ids[b.teacher, b.idx].long(), b.data.soft_probs[b.teacher, b.idx].float()
    soft = distillation_loss(logits, ids.to(logits.device), probs.to(logits.device), cfg.temperature)
    return soft + cfg.hard_weight * ce


def online_distillation(logits: torch.Tensor, b: Batch, cfg: NnetConfig) -> torch.Tensor:
    """KD to the teacher models run on the student's (mixed-up) windows."""
    return online_loss(logits, b.x, b.teachers, b.hard, cfg, b.mix)


LOSSES = {"ce": cross_entropy, "kd": stored_distillation, "online_kd": online_distillation}


def pick_loss(cfg: NnetConfig, soft_targets: bool, teachers: bool) -> str:
    """The loss's name: the config's `loss`, or with `auto` the one the targets call for
    (teachers: online_kd, stored soft targets: kd, else ce); a loss that needs targets the
    run has not got is an error."""
    name = cfg.loss if cfg.loss != "auto" else "online_kd" if teachers else "kd" if soft_targets else "ce"
    if name not in LOSSES:
        raise AsrkdError(f"loss {name!r} is not registered (known: {', '.join(LOSSES)})")
    if (name == "kd") != soft_targets or (name == "online_kd") != teachers:
        raise AsrkdError(f"loss {name!r} does not fit the run's targets (soft targets: {soft_targets}, "
                         f"teacher models: {teachers})")
    return name

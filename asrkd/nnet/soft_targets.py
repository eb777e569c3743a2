"""Ensemble soft targets (Hinton et al. 2015): the members' tempered posteriors
softmax(z/T), averaged, kept as the top k senones per frame.

A soft-target dir (`exp/nnet/soft_T<T>/`) holds `ids.{ark,scp}` ([T, k] senone ids,
uint16, or int32 beyond 65,535 senones) and `probs.{ark,scp}` ([T, k] float16, the
ensemble's probabilities of those senones), keyed by utterance and written with kaldiio's
npy-in-ark format, plus `info.json` (temperature, members, k, the mass the top k hold,
the KL divergence of the dense distribution from the stored one, sizes). The stored
distribution is the top k plus the remaining mass spread evenly over the other senones
(`tail_probability`): renormalising the top k instead gives every other senone a target
of 0, and at T = 2 the top 20 hold only half the mass, so a student learns to push those
logits down without bound and becomes overconfident."""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import ExitStack
from pathlib import Path

import kaldiio
import numpy as np
import torch
from tqdm import tqdm

from asrkd.data import sort_key
from asrkd.environment import environment
from asrkd.features import FeatureReader
from asrkd.outputs import Output
from asrkd.utils import AsrkdError, relocate_scp

log = logging.getLogger(__name__)


def average_posteriors(logits: list[torch.Tensor], temperature: float = 1.0,
                       mean: str = "arithmetic") -> torch.Tensor:
    """log of the members' averaged softmax(z/T) ([..., N] each -> [..., N] log-probs).
    arithmetic: log mean_m p_m (the paper's); geometric: normalised exp(mean_m log p_m)."""
    logp = torch.stack([torch.log_softmax(z.float() / temperature, -1) for z in logits])
    if mean == "arithmetic":
        return torch.logsumexp(logp, 0) - math.log(len(logits))
    if mean == "geometric":
        return torch.log_softmax(logp.mean(0), -1)
    raise AsrkdError(f"unknown ensemble mean {mean!r} (arithmetic or geometric)")


def top_k(logp: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """The k most likely senones of each frame: (ids, their probabilities as float16, and
    KL(dense || stored) per frame, the stored distribution having the top k and the rest of
    the mass spread evenly over the other senones)."""
    k = min(k, logp.shape[-1])
    vals, ids = logp.topk(k, -1)
    p16 = vals.exp().to(torch.float16)
    tail = tail_probability(p16.float(), logp.shape[-1])
    rest = logp.clone().scatter_(-1, ids, float("-inf")).exp()  # dense probabilities outside the top k
    kl = (torch.xlogy(rest, rest) - rest * torch.log(tail.clamp_min(1e-30))[:, None]).sum(-1)
    return ids.numpy(), p16.numpy(), kl


def tail_probability(probs: torch.Tensor, num_pdfs: int) -> torch.Tensor:
    """[B] probability of each senone outside the stored top k: (1 - their mass) / (N - k)."""
    k = probs.shape[-1]
    return (1 - probs.sum(-1)).clamp_min(0) / max(num_pdfs - k, 1)


class SoftTargets:
    """Read access to a soft-target dir."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "info.json").is_file():
            raise AsrkdError(f"{self.path}: no soft targets here (run `asrkd make-soft-targets`)")
        try:
            self.info = json.loads((self.path / "info.json").read_text())
            self.temperature = float(self.info["temperature"])
            self.info["num_pdfs"] = int(self.info["num_pdfs"])
        except (ValueError, KeyError, TypeError) as e:
            raise AsrkdError(f"{self.path}/info.json: corrupt ({type(e).__name__}: {e}); remake the soft targets "
                             "with make-soft-targets --force") from None
        self.ids = kaldiio.load_scp(str(self.path / "ids.scp"))
        self.probs = kaldiio.load_scp(str(self.path / "probs.scp"))

    def __contains__(self, utt: str) -> bool:
        return utt in self.ids

    def read(self, utt: str, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """([T, k] ids, [T, k] probabilities) of `utt`, checked against its frame count."""
        try:
            ids, probs = self.ids[utt], self.probs[utt]
        except (ValueError, OSError, EOFError) as e:
            raise AsrkdError(f"{self.path}: the soft targets of '{utt}' are unreadable ({type(e).__name__}: {e}); "
                             "remake them with make-soft-targets --force") from None
        if ids.shape != probs.shape or len(ids) != num_frames:
            raise AsrkdError(f"{self.path}: '{utt}' has soft targets of shape {ids.shape}/{probs.shape} "
                             f"for {num_frames} frames: remake them")
        return ids, probs


def make_soft_targets(models: list, data_dir: str | Path, out_dirs: dict, k: int = 20, mean: str = "arithmetic",
                      bf16: bool = False, force: bool = False, sources: dict | None = None) -> dict:
    """One pass over `data_dir`: every member's logits once, then for each output dir its
    tempered posteriors, top-k. `out_dirs` maps T to the ensemble's dir at T, or any key to
    (T, dir, member) for one member's own soft targets (teacher switching). `sources` names
    the models' dirs (what the outputs record as their inputs). Returns each key's info."""
    senones = {m.arch["num_senones"] for m in models}
    if len(senones) > 1:
        raise AsrkdError(f"the models have different senone counts {sorted(senones)}: train them on one alignment")
    if k > min(senones):
        raise AsrkdError(f"top_k={k} is more than the models' {min(senones)} senones")
    jobs = {key: d if isinstance(d, tuple) else (key, d, None) for key, d in out_dirs.items()}
    outs = {key: Output(Path(d).resolve(), "make-soft-targets",
                        {"temperature": t, "top_k": k, "mean": mean, "member": member, "bf16": bf16},
                        {"data": data_dir, **(sources or {})}) for key, (t, d, member) in jobs.items()}
    todo = {key: job for key, job in jobs.items() if not outs[key].done(force)}
    if not todo:
        return {key: json.loads((Path(d) / "info.json").read_text()) for key, (_, d, _) in jobs.items()}
    reader = FeatureReader(data_dir, cmvn=True)
    num_pdfs = models[0].arch["num_senones"]
    id_type = np.uint16 if num_pdfs <= 65536 else np.int32
    t0 = time.time()
    stats = {key: {"frames": 0, "mass": 0.0, "kl": 0.0} for key in todo}
    with ExitStack() as stack:
        tmps = {key: stack.enter_context(outs[key].writing()) for key in todo}
        files = {key: {n: (open(tmps[key] / f"{n}.ark", "wb"), open(tmps[key] / f"{n}.scp", "w"))
                       for n in ("ids", "probs")} for key in todo}
        for utt in tqdm(sorted(reader.keys(), key=sort_key), desc="soft targets", disable=None):
            feats = reader[utt]
            logits = [m.logits(feats, bf16=bf16) for m in models]
            for key, f in files.items():
                t, _, member = todo[key]
                ids, probs, kl = top_k(average_posteriors(logits if member is None else [logits[member]], t, mean), k)
                for name, arr in (("ids", ids.astype(id_type)), ("probs", probs)):
                    kaldiio.save_ark(f[name][0], {utt: arr}, scp=f[name][1], write_function="numpy")
                s = stats[key]
                s["frames"] += len(ids)
                s["mass"] += float(probs.astype(np.float64).sum())
                s["kl"] += float(kl.sum())
        for f in files.values():
            for ark, scp in f.values():
                ark.close()
                scp.close()
        seconds = time.time() - t0
        for key, (t, d, member) in todo.items():
            s = stats[key]
            n = max(s["frames"], 1)
            info = {"temperature": t, "top_k": k, "mean": mean, "members": len(models) if member is None else 1,
                    "member": member, "num_pdfs": num_pdfs,
                    "utts": len(reader), "frames": s["frames"], "mean_topk_mass": s["mass"] / n,
                    "kl_dense_vs_stored": s["kl"] / n,
                    "bytes_topk": sum((tmps[key] / f"{x}.ark").stat().st_size for x in ("ids", "probs")),
                    "bytes_dense_float32": 4 * s["frames"] * num_pdfs,
                    "seconds_all_temperatures": round(seconds, 1),
                    "frames_per_second": round(s["frames"] / seconds, 1), "environment": environment()}
            for x in ("ids", "probs"):  # the scp files point into the temporary dir
                relocate_scp(tmps[key] / f"{x}.scp", tmps[key], outs[key].path)
            (tmps[key] / "info.json").write_text(json.dumps(info, indent=2))
            stats[key] = info
            log.info("%s: T=%g, %d frames, top-%d mass %.4f, KL(dense || stored) %.4f nats, %.1f MB (dense %.0f MB)",
                     d, t, info["frames"], k, info["mean_topk_mass"], info["kl_dense_vs_stored"],
                     info["bytes_topk"] / 1e6, info["bytes_dense_float32"] / 1e6)
    return {key: (stats[key] if key in todo else json.loads((Path(d) / "info.json").read_text()))
            for key, (_, d, _) in jobs.items()}

"""Ensemble soft targets (Hinton et al. 2015): the members' tempered posteriors
softmax(z/T), averaged, kept as the top k senones per frame.

A soft-target dir (`exp/nnet/soft_T<T>/`) holds `ids.scp` -> `ids.<j>.ark` ([T, k] senone
ids, uint16, or int32 beyond 65,535 senones; an ark per shard j of the utterances) and
`probs.scp` -> `probs.<j>.ark` ([T, k] float16, the
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
import os
import shutil
import time
from contextlib import ExitStack
from pathlib import Path

import kaldiio
import numpy as np
import torch
from tqdm import tqdm

from asrkd.data import sort_key
from asrkd.environment import environment
from asrkd.features import FeatureReader, check_feature_kind
from asrkd.jobs import JobConfig, run_jobs, split_key
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


def _soft_target_job(models: list, data_dir, utts: list[str], todo: list[tuple], k: int, mean: str, bf16: bool,
                     shard: Path) -> list[dict]:
    """One job: for `utts` (a shard of the data), every output i of `todo` ((T, member) each)
    into `shard`/<i>/{ids,probs}.{ark,scp}; returns each output's frame count, top-k mass and
    KL sums."""
    reader = FeatureReader(data_dir, cmvn=True)
    id_type = np.uint16 if models[0].arch["num_senones"] <= 65536 else np.int32
    stats = [{"frames": 0, "mass": 0.0, "kl": 0.0} for _ in todo]
    tmp = shard.with_name(shard.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with ExitStack() as stack:
        files = []
        for i in range(len(todo)):
            (tmp / str(i)).mkdir(parents=True)
            files.append({n: (stack.enter_context(open(tmp / str(i) / f"{n}.ark", "wb")),
                              stack.enter_context(open(tmp / str(i) / f"{n}.scp", "w"))) for n in ("ids", "probs")})
        for utt in tqdm(utts, desc="soft targets", disable=None):
            logits = [m.logits(reader[utt], bf16=bf16) for m in models]
            for (t, member), f, st in zip(todo, files, stats):
                ids, probs, kl = top_k(average_posteriors(logits if member is None else [logits[member]], t, mean), k)
                for name, arr in (("ids", ids.astype(id_type)), ("probs", probs)):
                    kaldiio.save_ark(f[name][0], {utt: arr}, scp=f[name][1], write_function="numpy")
                st["frames"] += len(ids)
                st["mass"] += float(probs.astype(np.float64).sum())
                st["kl"] += float(kl.sum())
    for i in range(len(todo)):
        for n in ("ids", "probs"):
            relocate_scp(tmp / str(i) / f"{n}.scp", tmp, shard)
    shutil.rmtree(shard, ignore_errors=True)
    os.rename(tmp, shard)
    return stats


def make_soft_targets(models: list, data_dir: str | Path, out_dirs: dict, k: int = 20, mean: str = "arithmetic",
                      bf16: bool = False, force: bool = False, sources: dict | None = None, nj: int = 1,
                      jobs: JobConfig | None = None) -> dict:
    """One pass over `data_dir`: every member's logits once, then for each output dir its
    tempered posteriors, top-k. `out_dirs` maps T to the ensemble's dir at T, or any key to
    (T, dir, member) for one member's own soft targets (teacher switching). `sources` names
    the models' dirs (what the outputs record as their inputs). The utterances are split
    into `nj` shards, a job each (locally one after another, or a Slurm array with `jobs`);
    shard j's arks are
    `{ids,probs}.<j>.ark`. Returns each key's info."""
    senones = {m.arch["num_senones"] for m in models}
    if len(senones) > 1:
        raise AsrkdError(f"the models have different senone counts {sorted(senones)}: train them on one alignment")
    if k > min(senones):
        raise AsrkdError(f"top_k={k} is more than the models' {min(senones)} senones")
    names = list((sources or {}).values()) or [f"model {i}" for i in range(len(models))]
    for name, m in zip(names, models):
        check_feature_kind(data_dir, m.info.get("features"), name)
    specs = {key: d if isinstance(d, tuple) else (key, d, None) for key, d in out_dirs.items()}
    outs = {key: Output(Path(d).resolve(), "make-soft-targets",
                        {"temperature": t, "top_k": k, "mean": mean, "member": member, "bf16": bf16},
                        {"data": data_dir, **(sources or {})}) for key, (t, d, member) in specs.items()}
    todo = [key for key in specs if not outs[key].done(force)]
    if todo:
        _write_soft_targets(models, data_dir, {key: (specs[key], outs[key]) for key in todo}, k, mean, bf16, nj, jobs)
    return {key: json.loads((Path(d) / "info.json").read_text()) for key, (_, d, _) in specs.items()}


def _write_soft_targets(models, data_dir, todo: dict, k: int, mean: str, bf16: bool, nj: int, jobs) -> None:
    """Run the shards' jobs, then move each output's shards into it with info.json."""
    utts = sorted(FeatureReader(data_dir, cmvn=True).keys(), key=sort_key)
    nj = max(1, min(nj, len(utts)))
    first = next(iter(todo.values()))[1]
    key = split_key(" ".join(out.key() for _, out in todo.values()), nj)
    work = first.path.parent / f".soft_targets.{key}"  # the shards, kept until every output is written
    spec = [(t, member) for (t, _, member), _ in todo.values()]
    bounds = np.linspace(0, len(utts), nj + 1).round().astype(int)
    t0 = time.time()
    results = run_jobs(_soft_target_job, [(models, data_dir, utts[bounds[j]:bounds[j + 1]], spec, k, mean, bf16,
                                           work / f"shard.{j + 1}") for j in range(nj)],
                       "soft_targets", work, jobs, key=key)  # locally one after another, on all threads
    seconds = time.time() - t0
    num_pdfs = models[0].arch["num_senones"]
    for i, ((t, d, member), out) in enumerate(todo.values()):
        n = sum(r[i]["frames"] for r in results)
        with out.writing() as tmp:
            for name in ("ids", "probs"):
                lines = []
                for j in range(1, nj + 1):
                    src = work / f"shard.{j}" / str(i)
                    os.rename(src / f"{name}.ark", tmp / f"{name}.{j}.ark")
                    lines += [ln.replace(f"{src}/{name}.ark", f"{out.path}/{name}.{j}.ark")
                              for ln in (src / f"{name}.scp").read_text().splitlines()]
                (tmp / f"{name}.scp").write_text("".join(ln + "\n" for ln in lines))
            info = {"temperature": t, "top_k": k, "mean": mean, "members": len(models) if member is None else 1,
                    "member": member, "num_pdfs": num_pdfs, "utts": len(utts), "frames": n,
                    "mean_topk_mass": sum(r[i]["mass"] for r in results) / max(n, 1),
                    "kl_dense_vs_stored": sum(r[i]["kl"] for r in results) / max(n, 1),
                    "bytes_topk": sum(f.stat().st_size for f in tmp.glob("*.ark")),
                    "bytes_dense_float32": 4 * n * num_pdfs, "shards": nj,
                    "seconds_all_temperatures": round(seconds, 1), "frames_per_second": round(n / seconds, 1),
                    "environment": environment()}
            (tmp / "info.json").write_text(json.dumps(info, indent=2))
        log.info("%s: T=%g, %d frames, top-%d mass %.4f, KL(dense || stored) %.4f nats, %.1f MB (dense %.0f MB)",
                 d, t, n, k, info["mean_topk_mass"], info["kl_dense_vs_stored"], info["bytes_topk"] / 1e6,
                 info["bytes_dense_float32"] / 1e6)
    shutil.rmtree(work)

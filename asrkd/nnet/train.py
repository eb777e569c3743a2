"""Frame-level training of one senone classifier (the architecture `arch:` picks, the loss
`asrkd.nnet.losses` picks for its targets): hard targets, stored soft targets or teacher
models run on each minibatch.

Adam; after every epoch the dev frame accuracy is measured, the learning rate halved when
it gained less than `min_improvement` (Kaldi nnet1's newbob), and the best epoch kept.
Each epoch ends with a checkpoint (weights, optimizer, RNG, history); a killed run resumes
there and reaches the same final weights. Outputs: `final.pt` (with the environment it was
trained in), `nnet.yaml`, `log/train.json`.

Under torchrun the ranks train one model data-parallel: each computes its share of every
minibatch, the gradients are all-reduced before each Adam step, and rank 0 alone writes
(docs/training.md). The training frames are in memory (`FrameSet`) or streamed from the
archives (`FrameStream`), as the config's `train_data` says.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from asrkd.checkpoint import fingerprint, load_checkpoint, save_checkpoint
from asrkd.config import save_config
from asrkd.environment import environment
from asrkd.features import check_feature_kind, kind_text
from asrkd.hmm.alignment import AlignmentDir
from asrkd.nnet.config import NnetConfig
from asrkd.nnet.data import FrameSet, load_frames
from asrkd.nnet.losses import LOSSES, Batch, mixup, pick_loss
from asrkd.nnet.model import SenoneModel, build_model, load_nnet, save_nnet
from asrkd.nnet.runtime import (SINGLE, Dist, all_sum, barrier, broadcast_params, cpu_setup, derived_seed,
                                distributed_setup, on_main, resolve_precision, sync_gradients, weights_agree)
from asrkd.nnet.soft_targets import SoftTargets
from asrkd.nnet.stream import FrameStream, choose_train_data
from asrkd.outputs import Output
from asrkd.utils import AsrkdError, atomic_file

log = logging.getLogger(__name__)


def model_output(exp_dir, cfg: NnetConfig, seed: int, distill: bool, inputs: dict | None = None,
                 fingerprints: dict | None = None) -> Output:
    """The model dir as an `Output` of train-dnn: its config's keys, seed and kind are the options."""
    return Output(exp_dir, "train-dnn", {**cfg.record_options(), "seed": seed, "distill": distill},
                  inputs, fingerprints)


def _history(out: Output) -> list[dict]:
    """A finished model's per-epoch history (log/train.json)."""
    path = out.path / "log" / "train.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AsrkdError(f"{path}: unreadable ({type(e).__name__}); retrain with --force") from None


def make_optimizer(model: SenoneModel, cfg: NnetConfig) -> torch.optim.Optimizer:
    """Adam, fused: one pass over the weights per step instead of one per operation."""
    return torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, fused=True)


def forward_loss(model: SenoneModel, data: FrameSet, idx: torch.Tensor, cfg: NnetConfig, device: torch.device,
                 loss: str = "ce", teacher: int = 0,
                 teachers: list[SenoneModel] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather the minibatch's windows (mixed up if distilling from `teachers` with
    `cfg.teacher_mixup`), forward (bf16 autocast if configured), the registered `loss` (a mean
    over the frames). Returns the loss and the logits."""
    x = data.spliced(idx, cfg.left_context, cfg.right_context).to(device)
    mix = None
    if teachers and cfg.teacher_mixup > 0:
        x, *mix = mixup(x, cfg.teacher_mixup)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        logits = model(x)
    batch = Batch(data, idx, x, data.targets[idx].to(device), teacher, teachers, mix)
    return LOSSES[loss](logits.float(), batch, cfg), logits


def train_step(model: SenoneModel, opt: torch.optim.Optimizer, data: FrameSet, idx: torch.Tensor, cfg: NnetConfig,
               device: torch.device, loss: str = "ce", teacher: int = 0,
               teachers: list[SenoneModel] | None = None, dist: Dist = SINGLE) -> tuple[torch.Tensor, torch.Tensor]:
    """One minibatch: `forward_loss`, backward, Adam. Returns the loss and the logits, detached
    (under torchrun: this rank's part of the minibatch, `train_step_ranks`)."""
    if dist.active:
        return train_step_ranks(model, opt, data, idx, cfg, device, loss, teacher, teachers, dist)
    value, logits = forward_loss(model, data, idx, cfg, device, loss, teacher, teachers)
    if not torch.isfinite(value):
        raise AsrkdError(f"the training loss became {float(value)}; lower learning_rate")
    opt.zero_grad(set_to_none=True)
    value.backward()
    opt.step()
    return value.detach(), logits.detach()


def train_step_ranks(model: SenoneModel, opt: torch.optim.Optimizer, data: FrameSet, idx: torch.Tensor,
                     cfg: NnetConfig, device: torch.device, loss: str, teacher: int, teachers: list | None,
                     dist: Dist) -> tuple[torch.Tensor, torch.Tensor | None]:
    """This rank's frames `idx` of a minibatch: backward of their summed loss, then the
    gradients, the summed loss and the frame count all-reduced in one buffer and the
    gradients divided by the minibatch's frame count: the gradient of its mean loss, as one
    process computes it (up to float rounding), however unevenly the ranks share it (a rank
    may have no frames). Every rank sees the same summed loss, so all stop on a non-finite one."""
    opt.zero_grad(set_to_none=True)
    value, logits = torch.zeros(()), None
    if len(idx):
        value, logits = forward_loss(model, data, idx, cfg, device, loss, teacher, teachers)
        (value * len(idx)).backward()
    params = list(model.parameters())
    total, count = sync_gradients(params, [float(value.detach()) * len(idx), float(len(idx))], dist)
    if not math.isfinite(total):
        raise AsrkdError(f"the training loss became {total / max(count, 1)}; lower learning_rate")
    if count:
        for p in params:
            p.grad.div_(count)
        opt.step()
    return value.detach(), None if logits is None else logits.detach()


@torch.no_grad()
def evaluate(model: SenoneModel, data: FrameSet, cfg: NnetConfig, device: torch.device, chunk: int = 4096,
             dist: Dist = SINGLE) -> dict:
    """Frame accuracy and cross-entropy against the hard targets, dropout off (under torchrun
    each rank scores 1/N of the frames and the sums are all-reduced)."""
    model.eval()
    correct, loss = 0, 0.0
    lo, hi = len(data) * dist.rank // dist.world_size, len(data) * (dist.rank + 1) // dist.world_size
    for idx in torch.arange(lo, hi).split(chunk):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            logits = model(data.spliced(idx, cfg.left_context, cfg.right_context).to(device)).float()
        y = data.targets[idx].to(device)
        correct += int((logits.argmax(1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
    model.train()
    if dist.active:
        correct, loss = all_sum([correct, loss], dist)
    return {"frame_accuracy": correct / len(data), "cross_entropy": loss / len(data)}


def train_epoch(model: SenoneModel, opt, train: FrameSet | FrameStream, cfg: NnetConfig, device: torch.device,
                loss: str, teachers: list | None, seed: int, epoch: int, dist: Dist = SINGLE) -> tuple[float, float]:
    """One pass over `train` in the epoch's seeded order (and, with several teachers' stored
    soft targets, a seeded teacher per minibatch); returns the mean loss and the training
    frame accuracy. Under torchrun each rank draws its dropout masks and mixup from a seed of
    its own for the epoch, and the statistics are summed over the ranks."""
    switching = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 500_000)
    num_teachers = train.num_soft if loss == "kd" else 1
    if dist.active:
        torch.manual_seed(derived_seed(seed, epoch, dist.rank))
    tot_loss, correct, frames = 0.0, 0, 0
    batches = train.epoch_batches(cfg.batch_size, seed, epoch, dist.rank, dist.world_size)
    for data, idx in tqdm(batches, total=train.num_steps(cfg.batch_size), desc=f"epoch {epoch}",
                          disable=None if dist.main else True, mininterval=10):
        teacher = int(torch.randint(num_teachers, (1,), generator=switching)) if num_teachers > 1 else 0
        value, logits = train_step(model, opt, data, idx, cfg, device, loss, teacher, teachers, dist)
        tot_loss += float(value) * len(idx)
        if logits is not None:
            correct += int((logits.argmax(1).cpu() == data.targets[idx]).sum())
        frames += len(idx)
    if dist.active:
        tot_loss, correct, frames = all_sum([tot_loss, correct, frames], dist)
    return tot_loss / frames, correct / frames


@dataclasses.dataclass
class _Job:
    """What one training run is given, and where it runs."""

    cfg: NnetConfig
    train: FrameSet | FrameStream
    dev: FrameSet
    device: torch.device
    dist: Dist
    loss: str
    teachers: list | None
    seed: int
    exp_dir: Path
    meta: dict
    env: dict


@dataclasses.dataclass
class _State:
    """A run's model, optimizer and progress: what a checkpoint holds."""

    model: SenoneModel
    opt: torch.optim.Optimizer
    history: list = dataclasses.field(default_factory=list)
    best: dict | None = None
    best_acc: float = -1.0
    lr: float = 0.0
    halvings: int = 0
    start: int = 1


def train_dnn(cfg: NnetConfig, train: FrameSet | FrameStream, dev: FrameSet, num_pdfs: int,
              exp_dir: str | Path | Output, seed: int = 0, distill: bool = False, device: str = "auto",
              meta: dict | None = None, force: bool = False, teachers: list[SenoneModel] | None = None) -> list[dict]:
    """Train one model into `exp_dir` (a path, or an `Output` whose done-check the caller
    made); returns the per-epoch history. `meta` (data fingerprints) must match a
    checkpoint's for the run to resume from it. Distilling, the soft targets are the training
    frames' stored ones, or with `teachers` computed per minibatch. Under torchrun every rank
    calls it; rank 0 alone writes the model dir, the others wait for it."""
    dist, dev_ = distributed_setup(device)
    distill = distill or bool(teachers)
    out = exp_dir if isinstance(exp_dir, Output) else model_output(exp_dir, cfg, seed, distill, fingerprints=meta)
    if not isinstance(exp_dir, Output) and on_main(lambda: out.done(force), dist):
        return _history(out)
    exp_dir = out.path
    if distill and not teachers and train.num_soft == 0:
        raise AsrkdError(f"{exp_dir}: distillation needs soft targets for the training frames")
    if train.kind and dev.kind and train.kind != dev.kind:
        raise AsrkdError(f"{exp_dir}: the dev set has {kind_text(dev.kind)}, the training set {kind_text(train.kind)}")
    loss = pick_loss(cfg, distill and not teachers, bool(teachers))
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, dev_))  # what runs, in nnet.yaml
    threads = cpu_setup() if dev_.type == "cpu" else None
    meta = {**(meta or {}), "config": json.dumps(cfg.record_options(), sort_keys=True), "seed": seed,
            "distill": distill, "frames": len(train)}
    job = _Job(cfg, train, dev, dev_, dist, loss, teachers, seed, exp_dir, meta, environment(dev_))
    if dist.main:
        out.start()
        (exp_dir / "log").mkdir(exist_ok=True)
        save_config(cfg, exp_dir / "nnet.yaml")
    barrier(dist)
    state = _initial_state(job, num_pdfs, distill)
    log.info("%s: %s %s model, %.2fM parameters, %d training frames (%s), loss %s, %s on %s%s%s", exp_dir,
             "distilled" if distill else "hard-target", cfg.arch, state.model.num_params() / 1e6, len(train),
             _where(train), loss, cfg.precision, dev_, f" ({threads} threads)" if threads else "",
             f", {dist.world_size} ranks ({torch.distributed.get_backend()})" if dist.active else "")
    _train_epochs(job, state)
    if dist.main:
        _finish(job, state, out, distill)
    barrier(dist)
    return state.history


def _where(train) -> str:
    return "streamed" if isinstance(train, FrameStream) else "in memory"


def _initial_state(job: _Job, num_pdfs: int, distill: bool) -> _State:
    """A new model and optimizer (weights from the seed), or those of the run's checkpoint."""
    cfg = job.cfg
    torch.manual_seed(job.seed)
    model = build_model(cfg.arch, job.train.feat_dim, num_pdfs, cfg.hidden, cfg.layers, cfg.left_context,
                        cfg.right_context, cfg.model_dropout(distill)).to(job.device)
    state = _State(model, make_optimizer(model, cfg), lr=cfg.learning_rate)
    ckpt = job.exp_dir / "checkpoint.pt"
    if on_main(ckpt.is_file, job.dist):
        saved = load_checkpoint(ckpt, job.meta)
        model.load_state_dict(saved["model"])
        state.opt.load_state_dict(saved["optimizer"])
        state.best, state.best_acc, state.lr, state.halvings = (saved["best"], saved["best_acc"], saved["lr"],
                                                                saved["halvings"])
        state.history, state.start = saved["history"], saved["epoch"] + 1
        torch.set_rng_state(saved["rng"])
        log.info("%s: resuming after epoch %d (best dev frame accuracy %.2f%%)", job.exp_dir, saved["epoch"],
                 100 * state.best_acc)
    broadcast_params(model, job.dist)
    return state


def _train_epochs(job: _Job, state: _State) -> None:
    """Epochs until max_epochs or the halving after max_halvings (newbob), each ending with a
    checkpoint (written by rank 0; the others wait)."""
    cfg = job.cfg
    stop = state.start > cfg.max_epochs or state.halvings > cfg.max_halvings
    for epoch in range(state.start, cfg.max_epochs + 1):
        if stop:
            break
        improved = _epoch(job, state, epoch)
        if epoch > 1 and improved < cfg.min_improvement:
            state.halvings += 1
            state.lr /= 2
            stop = state.halvings > cfg.max_halvings
        if job.dist.main:
            save_checkpoint(job.exp_dir / "checkpoint.pt",
                            {"model": state.model.state_dict(), "optimizer": state.opt.state_dict(),
                             "best": state.best, "best_acc": state.best_acc, "lr": state.lr,
                             "halvings": state.halvings, "epoch": epoch, "history": state.history,
                             "rng": torch.get_rng_state()}, job.meta, job.env)
        barrier(job.dist)


def _epoch(job: _Job, state: _State, epoch: int) -> float:
    """Train one epoch, score dev, keep the best weights, log; returns the dev frame accuracy
    gained over the best so far."""
    for g in state.opt.param_groups:
        g["lr"] = state.lr
    t0 = time.time()
    try:
        train_loss, train_acc = train_epoch(state.model, state.opt, job.train, job.cfg, job.device, job.loss,
                                            job.teachers, job.seed, epoch, job.dist)
    except AsrkdError as e:
        raise AsrkdError(f"{job.exp_dir}: epoch {epoch}: {e}") from None
    train_s = time.time() - t0
    if not weights_agree(state.model, job.dist):
        raise AsrkdError(f"{job.exp_dir}: epoch {epoch}: the ranks' weights differ (a non-deterministic all-reduce?)")
    ev = evaluate(state.model, job.dev, job.cfg, job.device, dist=job.dist)
    improved = ev["frame_accuracy"] - max(state.best_acc, 0.0)
    if ev["frame_accuracy"] > state.best_acc:
        state.best, state.best_acc = copy.deepcopy(state.model.state_dict()), ev["frame_accuracy"]
    state.history.append({"epoch": epoch, "lr": state.lr, "train_loss": train_loss, "train_frame_accuracy": train_acc,
                          "dev_frame_accuracy": ev["frame_accuracy"], "dev_cross_entropy": ev["cross_entropy"],
                          "train_seconds": round(train_s, 1), "frames_per_second": round(len(job.train) / train_s, 1),
                          "eval_seconds": round(time.time() - t0 - train_s, 1), "world_size": job.dist.world_size,
                          "train_data": "stream" if isinstance(job.train, FrameStream) else "ram"})
    log.info("epoch %d: lr %.2g, train loss %.4f, train acc %.2f%%, dev acc %.2f%% (%.0f frames/s, %.0f s)",
             epoch, state.lr, train_loss, 100 * train_acc, 100 * ev["frame_accuracy"],
             state.history[-1]["frames_per_second"], time.time() - t0)
    return improved


def _finish(job: _Job, state: _State, out: Output, distill: bool) -> None:
    """The best epoch's weights as final.pt, the history as log/train.json; the run finished."""
    state.model.load_state_dict(state.best)
    best_epoch = max(state.history, key=lambda h: h["dev_frame_accuracy"])
    save_nnet(job.exp_dir / "final.pt", state.model,
              {"epoch": best_epoch["epoch"], "dev_frame_accuracy": state.best_acc, "seed": job.seed,
               "distill": distill, "tree": job.meta.get("tree"), "world_size": job.dist.world_size,
               "features": job.train.kind}, job.env)
    with atomic_file(job.exp_dir / "log" / "train.json") as f:
        json.dump(state.history, f, indent=1)
    (job.exp_dir / "checkpoint.pt").unlink(missing_ok=True)
    out.finish()
    log.info("%s: best dev frame accuracy %.2f%% at epoch %d, %.0f s of training", job.exp_dir,
             100 * state.best_acc, best_epoch["epoch"],
             sum(h["train_seconds"] + h["eval_seconds"] for h in state.history))


def model_inputs(data_dir, ali_dir, dev_dir, dev_ali_dir, soft_dirs=(), teacher_dirs=()) -> dict:
    """Every input that changes a model, by name (what its `Output` fingerprints)."""
    return {"data": data_dir, "ali": ali_dir, "dev": dev_dir, "dev_ali": dev_ali_dir,
            **{f"soft_targets_{i}": d for i, d in enumerate(soft_dirs)},
            **{f"teacher_{i}": d for i, d in enumerate(teacher_dirs)}}


def load_sets(data_dir, ali_dir, dev_dir, dev_ali_dir, exp_dir: Path, soft_dirs=(), cfg: NnetConfig | None = None,
              dist: Dist = SINGLE):
    """Training frames (with soft targets from `soft_dirs`: in memory, or with `cfg` streamed
    where its `train_data` says), dev frames (in memory), senone count, and the fingerprints a
    checkpoint must match (data, alignment's tree). Rank 0 alone writes the skip lists."""
    ali, dev_ali = AlignmentDir(ali_dir), AlignmentDir(dev_ali_dir)
    if ali.num_pdfs != dev_ali.num_pdfs:
        raise AsrkdError(f"{dev_ali.path}: {dev_ali.num_pdfs} senones, but {ali.path} has {ali.num_pdfs}: "
                         "align both with the same tree")
    soft = [SoftTargets(d) for d in soft_dirs]
    for st in soft:
        if st.info["num_pdfs"] != ali.num_pdfs:
            raise AsrkdError(f"{st.path}: soft targets over {st.info['num_pdfs']} senones, alignment has "
                             f"{ali.num_pdfs}")
    if dist.main:
        (exp_dir / "log").mkdir(parents=True, exist_ok=True)
    logs = (exp_dir / "log" / "skipped_train.txt", exp_dir / "log" / "skipped_dev.txt") if dist.main else (None, None)
    train = training_frames(data_dir, ali, soft, cfg, logs[0], dist)
    dev = load_frames(dev_dir, dev_ali, skip_log=logs[1])
    files = [Path(data_dir) / "feats.scp", Path(data_dir) / "cmvn.scp", ali.path / "ali.scp"]
    meta = {"data": fingerprint(*files), "soft": " ".join(fingerprint(st.path / "info.json") for st in soft),
            "tree": fingerprint(ali.path / "tree") if (ali.path / "tree").is_file() else None}
    return train, dev, ali.num_pdfs, meta


def training_frames(data_dir, ali: AlignmentDir, soft: list[SoftTargets], cfg: NnetConfig | None,
                    skip_log: Path | None, dist: Dist = SINGLE) -> FrameSet | FrameStream:
    """The training frames in memory (`load_frames`) or streamed (`FrameStream`), as
    `cfg.train_data` says or, with auto, by their estimated size (`choose_train_data`);
    the log says which and why. Without `cfg`: in memory."""
    if cfg is None:
        return load_frames(data_dir, ali, soft, skip_log=skip_log)
    where, why = choose_train_data(cfg.train_data, data_dir, soft, dist.local_world_size)
    if where == "ram":
        log.info("%s: training frames in memory (%s)", data_dir, why)
        return load_frames(data_dir, ali, soft, skip_log=skip_log)
    train = FrameStream(data_dir, ali, soft, cfg.shuffle_buffer, skip_log)
    log.info("%s: training frames streamed (%s); a shuffle buffer of %d frames, about %.0f MB, twice while the "
             "next is read", data_dir, why, cfg.shuffle_buffer, cfg.shuffle_buffer * train.bytes_per_frame() / 1e6)
    return train


def train_model(cfg: NnetConfig, data_dir, ali_dir, dev_dir, dev_ali_dir, exp_dir, seed: int = 0,
                soft_dirs=(), device: str = "auto", force: bool = False, teacher_dirs=(),
                temperature: float | None = None) -> list[dict]:
    """One model: hard targets, or with `soft_dirs` a student (dropout `cfg.student_dropout`)
    trained on those soft targets at their temperature plus `cfg.hard_weight` times the
    hard-target cross-entropy; several dirs (the members' own) are switched per minibatch.
    With `teacher_dirs` instead, the student learns from those models' averaged softmax(z/T)
    (T: `temperature`, else `cfg.temperature`) on each minibatch's windows, mixed up by
    `cfg.teacher_mixup`. Stored soft targets bring their own T. Under torchrun (every rank
    runs it) the ranks train one model together, data-parallel."""
    exp_dir = Path(exp_dir)
    dist, dev_ = distributed_setup(device)  # an unusable device is an error before anything is written
    soft_dirs, teacher_dirs = list(soft_dirs or []), list(teacher_dirs or [])
    if soft_dirs and teacher_dirs:
        raise AsrkdError(f"{exp_dir}: give stored soft targets or teacher models, not both")
    temps = {SoftTargets(d).temperature for d in soft_dirs}
    if len(temps) > 1:
        raise AsrkdError(f"{exp_dir}: the soft-target dirs have different temperatures {sorted(temps)}")
    if (t := temps.pop() if temps else temperature) is not None and t != cfg.temperature:
        log.info("%s: distilling at T=%g (%s)", exp_dir, t, soft_dirs[0] if soft_dirs else "--temperature")
        cfg = dataclasses.replace(cfg, temperature=t, temperatures=sorted(set(cfg.temperatures) | {t}))
    out = model_output(exp_dir, cfg, seed, bool(soft_dirs or teacher_dirs),
                       model_inputs(data_dir, ali_dir, dev_dir, dev_ali_dir, soft_dirs, teacher_dirs))
    if on_main(lambda: out.done(force), dist):
        return _history(out)
    train, dev, num_pdfs, meta = load_sets(data_dir, ali_dir, dev_dir, dev_ali_dir, exp_dir, soft_dirs, cfg, dist)
    # bf16 weights cast once, not by autocast at every step (5 teachers at batch 512: 31 vs 33 ms)
    dtype = torch.bfloat16 if resolve_precision(cfg.precision, dev_) == "bf16" else torch.float32
    teachers = [load_nnet(d, dev_).requires_grad_(False).to(dtype) for d in teacher_dirs]
    for d, m in zip(teacher_dirs, teachers):
        check_feature_kind(data_dir, m.info.get("features"), d)
        if m.arch["num_senones"] != num_pdfs:
            raise AsrkdError(f"{d}: a teacher over {m.arch['num_senones']} senones, the alignment has {num_pdfs}")
    if teachers:
        meta["teachers"] = " ".join(fingerprint(Path(d) / "final.pt") for d in teacher_dirs)
    return train_dnn(cfg, train, dev, num_pdfs, out, seed=seed, distill=bool(soft_dirs), device=device,
                     meta=meta, teachers=teachers)

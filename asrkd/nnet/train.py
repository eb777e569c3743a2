"""Frame-level training of one senone classifier (the architecture `arch:` picks, the loss
`asrkd.nnet.losses` picks for its targets): hard targets, stored soft targets or teacher
models run on each minibatch.

Adam; after every epoch the dev frame accuracy is measured, the learning rate halved when
it gained less than `min_improvement` (Kaldi nnet1's newbob), and the best epoch kept.
Each epoch ends with a checkpoint (weights, optimizer, RNG, history); a killed run resumes
there and reaches the same final weights. Outputs: `final.pt` (with the environment it was
trained in), `nnet.yaml`, `log/train.json`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from asrkd.checkpoint import fingerprint, load_checkpoint, save_checkpoint
from asrkd.config import save_config
from asrkd.environment import environment
from asrkd.hmm.alignment import AlignmentDir
from asrkd.nnet.config import NnetConfig
from asrkd.nnet.data import FrameSet, load_frames
from asrkd.nnet.losses import LOSSES, Batch, mixup, pick_loss
from asrkd.nnet.model import SenoneModel, build_model, load_nnet, save_nnet
from asrkd.nnet.runtime import cpu_setup, pick_device, resolve_precision
from asrkd.nnet.soft_targets import SoftTargets
from asrkd.outputs import Output
from asrkd.utils import AsrkdError, atomic_file

log = logging.getLogger(__name__)


def model_output(exp_dir, cfg: NnetConfig, seed: int, distill: bool, inputs: dict | None = None,
                 fingerprints: dict | None = None) -> Output:
    """The model dir as an `Output` of train-dnn: its config's keys, seed and kind are the options."""
    return Output(exp_dir, "train-dnn", {**dataclasses.asdict(cfg), "seed": seed, "distill": distill},
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


def train_step(model: SenoneModel, opt: torch.optim.Optimizer, data: FrameSet, idx: torch.Tensor, cfg: NnetConfig,
               device: torch.device, loss: str = "ce", teacher: int = 0,
               teachers: list[SenoneModel] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One minibatch: gather the windows (mixed up if distilling from `teachers` with
    `cfg.teacher_mixup`), forward (bf16 autocast if configured), the registered `loss`,
    backward, Adam. Returns the loss and the logits, detached."""
    x = data.spliced(idx, cfg.left_context, cfg.right_context).to(device)
    mix = None
    if teachers and cfg.teacher_mixup > 0:
        x, *mix = mixup(x, cfg.teacher_mixup)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        logits = model(x)
    batch = Batch(data, idx, x, data.targets[idx].to(device), teacher, teachers, mix)
    value = LOSSES[loss](logits.float(), batch, cfg)
    if not torch.isfinite(value):
        raise AsrkdError(f"the training loss became {float(value)}; lower learning_rate")
    opt.zero_grad(set_to_none=True)
    value.backward()
    opt.step()
    return value.detach(), logits.detach()


@torch.no_grad()
def evaluate(model: SenoneModel, data: FrameSet, cfg: NnetConfig, device: torch.device, chunk: int = 4096) -> dict:
    """Frame accuracy and cross-entropy against the hard targets, dropout off."""
    model.eval()
    correct, loss = 0, 0.0
    for idx in data.batches(chunk):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            logits = model(data.spliced(idx, cfg.left_context, cfg.right_context).to(device)).float()
        y = data.targets[idx].to(device)
        correct += int((logits.argmax(1) == y).sum())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
    model.train()
    return {"frame_accuracy": correct / len(data), "cross_entropy": loss / len(data)}


def train_epoch(model: SenoneModel, opt, train: FrameSet, cfg: NnetConfig, device: torch.device, loss: str,
                teachers: list | None, seed: int, epoch: int) -> tuple[float, float]:
    """One pass over `train` in the epoch's seeded order (and, with several teachers' stored
    soft targets, a seeded teacher per minibatch); returns the mean loss and the training
    frame accuracy."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    switching = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 500_000)
    num_teachers = len(train.soft_ids) if loss == "kd" else 1
    tot_loss, correct = 0.0, 0
    for idx in tqdm(train.batches(cfg.batch_size, gen), desc=f"epoch {epoch}", disable=None, mininterval=10):
        teacher = int(torch.randint(num_teachers, (1,), generator=switching)) if num_teachers > 1 else 0
        value, logits = train_step(model, opt, train, idx, cfg, device, loss, teacher, teachers)
        tot_loss += float(value) * len(idx)
        correct += int((logits.argmax(1).cpu() == train.targets[idx]).sum())
    return tot_loss / len(train), correct / len(train)


def train_dnn(cfg: NnetConfig, train: FrameSet, dev: FrameSet, num_pdfs: int, exp_dir: str | Path | Output,
              seed: int = 0, distill: bool = False, device: str = "auto", meta: dict | None = None,
              force: bool = False, teachers: list[SenoneModel] | None = None) -> list[dict]:
    """Train one model into `exp_dir` (a path, or an `Output` whose done-check the caller
    made); returns the per-epoch history. `meta` (data fingerprints) must match a
    checkpoint's for the run to resume from it. Distilling, the soft targets are the training
    frames' stored ones, or with `teachers` computed per minibatch."""
    distill = distill or bool(teachers)
    out = exp_dir if isinstance(exp_dir, Output) else model_output(exp_dir, cfg, seed, distill, fingerprints=meta)
    if not isinstance(exp_dir, Output) and out.done(force):
        return _history(out)
    exp_dir = out.path
    if distill and not teachers and train.soft_ids is None:
        raise AsrkdError(f"{exp_dir}: distillation needs soft targets for the training frames")
    loss = pick_loss(cfg, distill and not teachers, bool(teachers))
    dev_ = pick_device(device)
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, dev_))  # what runs, in nnet.yaml
    threads = cpu_setup() if dev_.type == "cpu" else None
    env = environment(dev_)
    out.start()
    (exp_dir / "log").mkdir(exist_ok=True)
    save_config(cfg, exp_dir / "nnet.yaml")
    ckpt = exp_dir / "checkpoint.pt"
    meta = {**(meta or {}), "config": json.dumps(cfg.__dict__, sort_keys=True), "seed": seed, "distill": distill,
            "frames": len(train)}

    torch.manual_seed(seed)
    model = build_model(cfg.arch, train.feat_dim, num_pdfs, cfg.hidden, cfg.layers, cfg.left_context,
                        cfg.right_context, cfg.model_dropout(distill)).to(dev_)
    opt = make_optimizer(model, cfg)
    history, best, best_acc, lr, halvings, start = [], None, -1.0, cfg.learning_rate, 0, 1
    if ckpt.is_file():
        state = load_checkpoint(ckpt, meta)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        best, best_acc, lr, halvings = state["best"], state["best_acc"], state["lr"], state["halvings"]
        history, start = state["history"], state["epoch"] + 1
        torch.set_rng_state(state["rng"])
        log.info("%s: resuming after epoch %d (best dev frame accuracy %.2f%%)", exp_dir, state["epoch"],
                 100 * best_acc)
    log.info("%s: %s %s model, %.2fM parameters, %d training frames, loss %s, %s on %s%s", exp_dir,
             "distilled" if distill else "hard-target", cfg.arch, model.num_params() / 1e6, len(train), loss,
             cfg.precision, dev_, f" ({threads} threads)" if threads else "")

    stop = start > cfg.max_epochs or halvings > cfg.max_halvings
    for epoch in range(start, cfg.max_epochs + 1):
        if stop:
            break
        for g in opt.param_groups:
            g["lr"] = lr
        t0 = time.time()
        try:
            train_loss, train_acc = train_epoch(model, opt, train, cfg, dev_, loss, teachers, seed, epoch)
        except AsrkdError as e:
            raise AsrkdError(f"{exp_dir}: epoch {epoch}: {e}") from None
        train_s = time.time() - t0
        ev = evaluate(model, dev, cfg, dev_)
        improved = ev["frame_accuracy"] - max(best_acc, 0.0)
        if ev["frame_accuracy"] > best_acc:
            best, best_acc = copy.deepcopy(model.state_dict()), ev["frame_accuracy"]
        history.append({"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_frame_accuracy": train_acc,
                        "dev_frame_accuracy": ev["frame_accuracy"], "dev_cross_entropy": ev["cross_entropy"],
                        "train_seconds": round(train_s, 1), "frames_per_second": round(len(train) / train_s, 1),
                        "eval_seconds": round(time.time() - t0 - train_s, 1)})
        log.info("epoch %d: lr %.2g, train loss %.4f, train acc %.2f%%, dev acc %.2f%% (%.0f frames/s, %.0f s)",
                 epoch, lr, train_loss, 100 * train_acc, 100 * ev["frame_accuracy"],
                 history[-1]["frames_per_second"], time.time() - t0)
        if epoch > 1 and improved < cfg.min_improvement:
            halvings += 1
            lr /= 2
            stop = halvings > cfg.max_halvings
        save_checkpoint(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(), "best": best,
                               "best_acc": best_acc, "lr": lr, "halvings": halvings, "epoch": epoch,
                               "history": history, "rng": torch.get_rng_state()}, meta, env)
    model.load_state_dict(best)
    best_epoch = max(history, key=lambda h: h["dev_frame_accuracy"])
    save_nnet(exp_dir / "final.pt", model, {"epoch": best_epoch["epoch"], "dev_frame_accuracy": best_acc,
                                             "seed": seed, "distill": distill, "tree": meta.get("tree")}, env)
    with atomic_file(exp_dir / "log" / "train.json") as f:
        json.dump(history, f, indent=1)
    ckpt.unlink(missing_ok=True)
    out.finish()
    log.info("%s: best dev frame accuracy %.2f%% at epoch %d, %.0f s of training", exp_dir, 100 * best_acc,
             best_epoch["epoch"], sum(h["train_seconds"] + h["eval_seconds"] for h in history))
    return history


def model_inputs(data_dir, ali_dir, dev_dir, dev_ali_dir, soft_dirs=(), teacher_dirs=()) -> dict:
    """Every input that changes a model, by name (what its `Output` fingerprints)."""
    return {"data": data_dir, "ali": ali_dir, "dev": dev_dir, "dev_ali": dev_ali_dir,
            **{f"soft_targets_{i}": d for i, d in enumerate(soft_dirs)},
            **{f"teacher_{i}": d for i, d in enumerate(teacher_dirs)}}


def load_sets(data_dir, ali_dir, dev_dir, dev_ali_dir, exp_dir: Path, soft_dirs=()):
    """Training frames (with soft targets from `soft_dirs`), dev frames, senone count, and the
    fingerprints a checkpoint must match (data, alignment's tree)."""
    ali, dev_ali = AlignmentDir(ali_dir), AlignmentDir(dev_ali_dir)
    if ali.num_pdfs != dev_ali.num_pdfs:
        raise AsrkdError(f"{dev_ali.path}: {dev_ali.num_pdfs} senones, but {ali.path} has {ali.num_pdfs}: "
                         "align both with the same tree")
    soft = [SoftTargets(d) for d in soft_dirs]
    for st in soft:
        if st.info["num_pdfs"] != ali.num_pdfs:
            raise AsrkdError(f"{st.path}: soft targets over {st.info['num_pdfs']} senones, alignment has "
                             f"{ali.num_pdfs}")
    (exp_dir / "log").mkdir(parents=True, exist_ok=True)
    train = load_frames(data_dir, ali, soft, skip_log=exp_dir / "log" / "skipped_train.txt")
    dev = load_frames(dev_dir, dev_ali, skip_log=exp_dir / "log" / "skipped_dev.txt")
    files = [Path(data_dir) / "feats.scp", Path(data_dir) / "cmvn.scp", ali.path / "ali.scp"]
    meta = {"data": fingerprint(*files), "soft": " ".join(fingerprint(st.path / "info.json") for st in soft),
            "tree": fingerprint(ali.path / "tree") if (ali.path / "tree").is_file() else None}
    return train, dev, ali.num_pdfs, meta


def train_model(cfg: NnetConfig, data_dir, ali_dir, dev_dir, dev_ali_dir, exp_dir, seed: int = 0,
                soft_dirs=(), device: str = "auto", force: bool = False, teacher_dirs=(),
                temperature: float | None = None) -> list[dict]:
    """One model: hard targets, or with `soft_dirs` a student (dropout `cfg.student_dropout`)
    trained on those soft targets at their temperature plus `cfg.hard_weight` times the
    hard-target cross-entropy; several dirs (the members' own) are switched per minibatch.
    With `teacher_dirs` instead, the student learns from those models' averaged softmax(z/T)
    (T: `temperature`, else `cfg.temperature`) on each minibatch's windows, mixed up by
    `cfg.teacher_mixup`. Stored soft targets bring their own T."""
    exp_dir = Path(exp_dir)
    pick_device(device)  # an unusable device is an error before anything is written
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
    if out.done(force):
        return _history(out)
    train, dev, num_pdfs, meta = load_sets(data_dir, ali_dir, dev_dir, dev_ali_dir, exp_dir, soft_dirs)
    # bf16 weights cast once, not by autocast at every step (5 teachers at batch 512: 31 vs 33 ms)
    dtype = torch.bfloat16 if resolve_precision(cfg.precision, pick_device(device)) == "bf16" else torch.float32
    teachers = [load_nnet(d, pick_device(device).type).requires_grad_(False).to(dtype) for d in teacher_dirs]
    for d, m in zip(teacher_dirs, teachers):
        if m.arch["num_senones"] != num_pdfs:
            raise AsrkdError(f"{d}: a teacher over {m.arch['num_senones']} senones, the alignment has {num_pdfs}")
    if teachers:
        meta["teachers"] = " ".join(fingerprint(Path(d) / "final.pt") for d in teacher_dirs)
    return train_dnn(cfg, train, dev, num_pdfs, out, seed=seed, distill=bool(soft_dirs), device=device,
                     meta=meta, teachers=teachers)



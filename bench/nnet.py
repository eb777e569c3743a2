#!/usr/bin/env python3
"""Neural training benchmark: training frames/s and achieved GFLOP/s of the senone DNN
against a plain torch matmul of the network's own layer shapes, measured in the same run,
in fp32 and bf16 (autocast; AMX on CPUs that have it), for members (`dropout`) and students
(`student_dropout`; the hard-target loss for both); soft-target frames/s; top-k vs dense
soft-target storage.

    python bench/nnet.py [--config recipes/speechocean762/conf/nnet.yaml] [--threads N]

Training steps are the trainer's own: a shuffled minibatch gathered from a `FrameSet`
(26-frame windows by index gather), forward, cross-entropy, backward, fused Adam
(`asrkd.nnet.train.train_step`). Training FLOPs
are 3 x the forward pass (forward, and backward's two products per layer). The matmul
reference runs every layer's [batch, in] x [in, out] product and reports the FLOP-weighted
rate. Frames are random (speed does not depend on them). Writes bench/results/nnet.json.
"""

import argparse
import itertools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from asrkd.config import load_config
from asrkd.nnet.config import NnetConfig
from asrkd.nnet.data import FrameSet
from asrkd.nnet.model import SenoneDnn
from asrkd.nnet.soft_targets import average_posteriors, top_k
from asrkd.nnet.runtime import cpu_setup
from asrkd.nnet.train import make_optimizer, train_step

ROOT = Path(__file__).resolve().parents[1]


def synthetic_frames(num_frames: int, feat_dim: int, num_pdfs: int, utt_len: int = 400) -> FrameSet:
    g = torch.Generator().manual_seed(0)
    lengths = np.full(num_frames // utt_len, utt_len)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    first = np.repeat(offsets[:-1], lengths)
    return FrameSet([f"u{i}" for i in range(len(lengths))], offsets, torch.randn(offsets[-1], feat_dim, generator=g),
                    torch.from_numpy(first), torch.from_numpy(first + utt_len - 1),
                    torch.randint(0, num_pdfs, (offsets[-1],), generator=g))


def timed(fn, seconds: float, warmup: int = 3) -> tuple[int, float]:
    """Run fn() until `seconds` have passed (after warm-up); returns (calls, elapsed)."""
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n, time.perf_counter() - t0


def matmul_gflops(shapes: list[tuple[int, int, int]], dtype: torch.dtype, seconds: float) -> float:
    mats = [(torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)) for m, k, n in shapes]
    flops = sum(2 * m * k * n for m, k, n in shapes)
    calls, el = timed(lambda: [a @ b for a, b in mats], seconds)
    return flops * calls / el / 1e9


def train_rate(cfg: NnetConfig, data: FrameSet, num_pdfs: int, seconds: float, student: bool = False) -> dict:
    torch.manual_seed(0)
    model = SenoneDnn(data.feat_dim, num_pdfs, cfg.hidden, cfg.layers, cfg.left_context, cfg.right_context,
                      cfg.model_dropout(student))
    opt = make_optimizer(model, cfg)
    batches = (i for e in itertools.count() for i in data.batches(cfg.batch_size, torch.Generator().manual_seed(e)))
    calls, el = timed(lambda: train_step(model, opt, data, next(batches), cfg, torch.device("cpu")), seconds)
    fps = calls * cfg.batch_size / el
    return {"frames_per_second": round(fps), "gflops": round(3 * model.flops_per_frame() * fps / 1e9, 1),
            "seconds_per_epoch_of_725756_frames": round(725756 / fps, 1)}


def soft_target_rate(cfg: NnetConfig, num_pdfs: int, members: int, seconds: float) -> float:
    """Frames/s of make-soft-targets' work per utterance: every member's forward pass once,
    then averaging and top-k at every temperature."""
    torch.manual_seed(0)
    models = [SenoneDnn(40, num_pdfs, cfg.hidden, cfg.layers, cfg.left_context, cfg.right_context).eval()
              for _ in range(members)]
    feats = np.random.default_rng(0).standard_normal((400, 40)).astype(np.float32)

    def utt():
        logits = [m.logits(feats, bf16=cfg.precision == "bf16") for m in models]
        for t in cfg.temperatures:
            top_k(average_posteriors(logits, t, cfg.ensemble_mean), cfg.top_k)

    calls, el = timed(utt, seconds, warmup=1)
    return 400 * calls / el


def cpu_info() -> dict:
    """The CPU's model name and its bf16 matrix units (AMX tiles, or AVX512-BF16 dot products)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return {"cpu": model, "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "recipes/speechocean762/conf/nnet.yaml"),
                   help="nnet config whose network is timed")
    p.add_argument("--num-pdfs", type=int, default=1500, help="output layer size (senones)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (default: all CPUs)")
    p.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    p.add_argument("--out", default=str(ROOT / "bench/results/nnet.json"), help="JSON results")
    a = p.parse_args()
    cpu_setup(a.threads)  # the trainer's: threads, denormals, malloc
    cfg = load_config(NnetConfig, a.config)
    data = synthetic_frames(200_000, 40, a.num_pdfs)
    dims = [(cfg.left_context + 1 + cfg.right_context) * 40] + [cfg.hidden] * cfg.layers + [a.num_pdfs]
    fwd = [(cfg.batch_size, i, o) for i, o in zip(dims, dims[1:])]
    # backward: dX = dY W^T ([B, out] x [out, in]) and dW = X^T dY ([in, B] x [B, out])
    shapes = fwd + [(b, o, i) for b, i, o in fwd] + [(i, b, o) for b, i, o in fwd]
    res = {"config": a.config, "hidden": cfg.hidden, "layers": cfg.layers, "batch_size": cfg.batch_size,
           "num_pdfs": a.num_pdfs, "threads": a.threads, **cpu_info(), "torch": torch.__version__, "precisions": {}}
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        c = NnetConfig(**{**cfg.__dict__, "precision": precision})
        mm = matmul_gflops(shapes, dtype, a.seconds)
        tr = train_rate(c, data, a.num_pdfs, a.seconds)
        res["precisions"][precision] = {"matmul_gflops": round(mm, 1), "train": tr,
                                        "train_share_of_matmul": round(tr["gflops"] / mm, 3)}
        if c.student_dropout != c.dropout:  # students train with their own dropout
            st = train_rate(c, data, a.num_pdfs, a.seconds, student=True)
            res["precisions"][precision].update(train_student=st, student_share_of_matmul=round(st["gflops"] / mm, 3))
        print(precision, json.dumps(res["precisions"][precision]), flush=True)
    bf16_over_fp32 = res["precisions"]["bf16"]["train"]["frames_per_second"] / \
        res["precisions"]["fp32"]["train"]["frames_per_second"]
    res["bf16_training_speedup"] = round(bf16_over_fp32, 2)
    res["soft_targets_frames_per_second"] = round(soft_target_rate(cfg, a.num_pdfs, cfg.num_members, a.seconds))
    res["soft_target_bytes_per_frame"] = {"top_k": cfg.top_k * 4, "dense_float32": 4 * a.num_pdfs}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

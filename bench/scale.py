#!/usr/bin/env python3
"""How time and peak memory of each stage grow with the training data.

    python bench/scale.py [--recipe-dir recipes/speechocean762] [--fractions 0.25,0.5,1]
                          [--replicas 1,4,16] [--train-steps 300] [--soft-replicas 1,4,16]
                          [--parts gmm,nnet,soft]
                          [--out bench/results/scale.json]

Needs the recipe's stages 0-1 (data/<train>/ with wav.scp, data/lang), and for soft targets
stage 7 (exp/tri_ali: the number of senones). Every measurement
is one `asrkd` command (or one `python -c` of the trainer's own functions) in a child
process: wall seconds and the child's peak RSS (`os.wait4`).

- **GMM stages** on a seeded `--fractions` of the training utterances: compute-fbank
  (--nj 2), compute-cmvn-stats, train-mono, align, train-tri, align, with the recipe's
  sizes. The largest fraction's tri alignment is the training targets below.
- **Neural stages** on the whole training set's features and alignment replicated
  `--replicas` times (utterance ids `<utt>-r<k>`, same speakers): loading the frames and
  `--train-steps` minibatches of the trainer, for the in-RAM path (`train_data: ram`) and
  the streamed one (`train_data: stream`), at 1x also a student with the members run on each
  minibatch (online teachers); and make-soft-targets with the recipe's members
  (random weights: the cost does not depend on them) on the recipe's training features
  replicated `--soft-replicas` times.
- **Fits.** Each stage's seconds against hours of training audio, a least-squares line
  `a + b * hours` (and the slope of log time on log hours), projected to 100 h and 1000 h.
Writes JSON (`--out`) and, beside it, a PNG of time and memory against hours.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asrkd.data import read_table, sort_key, write_table  # noqa: E402
from asrkd.environment import environment  # noqa: E402


def measure(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run `cmd` as a child; its wall seconds and peak RSS in MB. A failure stops the bench."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"scale: {' '.join(map(str, cmd))} failed; see {log}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def asrkd(*args) -> list[str]:
    return [sys.executable, "-m", "asrkd.cli", *map(str, args)]


def audio_hours(data_dir: Path) -> float:
    return sum(float(v) for v in read_table(data_dir / "utt2dur").values()) / 3600


def gmm_stages(recipe: Path, train: str, fraction: float, work: Path, sizes: dict) -> dict:
    """The GMM stages on `fraction` of the training utterances; seconds and MB per stage."""
    d = work / f"gmm_{fraction:g}"
    data, lang = d / "data", recipe / "data/lang"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    src = recipe / "data" / train
    subprocess.run(asrkd("subset-data-dir", "--fraction", fraction, src, data) if fraction < 1
                   else ["cp", "-r", str(src), str(data)], check=True, capture_output=True)
    for f in ("feats.scp", "cmvn.scp", "utt2num_frames", "utt2dur"):
        (data / f).unlink(missing_ok=True)
    shutil.rmtree(data / "data", ignore_errors=True)
    steps = {
        "fbank": asrkd("compute-fbank", "--config", recipe / "conf/fbank.yaml", "--nj", 2, data),
        "cmvn": asrkd("compute-cmvn-stats", data),
        "mono": asrkd("train-mono", "--tot-gauss", sizes["mono_gauss"], data, lang, d / "mono"),
        "mono_align": asrkd("align", "--nj", 2, data, lang, d / "mono", d / "mono_ali"),
        "tri": asrkd("train-tri", "--num-leaves", sizes["num_leaves"], "--tot-gauss", sizes["tri_gauss"],
                     *sizes["tree_opts"], data, lang, d / "mono_ali", d / "tri"),
        "tri_align": asrkd("align", "--nj", 2, data, lang, d / "tri", d / "tri_ali"),
    }
    out = {}
    for name, cmd in steps.items():
        out[name] = measure(cmd, d / "log" / f"{name}.log", {"OMP_NUM_THREADS": "2"})
        print(f"gmm {fraction:g}: {name} {out[name]}", flush=True)
    frames = sum(int(v) for v in read_table(data / "utt2num_frames").values())
    return {"fraction": fraction, "hours": round(audio_hours(data), 3), "frames": frames, "stages": out}


def replicate(data: Path, ali: Path, k: int, dest: Path) -> tuple[Path, Path]:
    """The data dir's features (and the alignment) `k` times over, as new utterances."""
    shutil.rmtree(dest, ignore_errors=True)
    dd, da = dest / "data", dest / "ali"
    dd.mkdir(parents=True)
    shutil.copytree(ali, da, ignore=shutil.ignore_patterns("ali.scp", "log", ".*"))
    for name in ("feats.scp", "utt2spk", "text", "utt2num_frames", "utt2dur"):
        table = read_table(data / name, allow_empty_value=True)
        write_table(dd / name, {f"{u}-r{r}": v for u, v in table.items() for r in range(k)})
    spk2utt = {}
    for u, s in read_table(dd / "utt2spk").items():
        spk2utt.setdefault(s, []).append(u)
    write_table(dd / "spk2utt", {s: " ".join(sorted(us, key=sort_key)) for s, us in spk2utt.items()})
    shutil.copy(data / "cmvn.scp", dd / "cmvn.scp")
    ali_scp = read_table(ali / "ali.scp")
    write_table(da / "ali.scp", {f"{u}-r{r}": v for u, v in ali_scp.items() for r in range(k)})
    return dd, da


TRAIN = """
import dataclasses, json, sys, time, torch
from asrkd.config import load_config
from asrkd.hmm.alignment import AlignmentDir
from asrkd.nnet.config import NnetConfig
from asrkd.nnet.model import build_model
from asrkd.nnet.runtime import cpu_setup
from asrkd.nnet.train import make_optimizer, train_step, training_frames
config, data, ali, where, steps, teachers = sys.argv[1:7]
cfg = dataclasses.replace(load_config(NnetConfig, config), train_data=where, precision="fp32")
cpu_setup()
t0 = time.perf_counter()
ali = AlignmentDir(ali)
train = training_frames(data, ali, [], cfg, None)
new = lambda: build_model(cfg.arch, train.feat_dim, ali.num_pdfs, cfg.hidden, cfg.layers, cfg.left_context,
                          cfg.right_context, cfg.dropout)
model, tutors = new(), [new().eval().requires_grad_(False) for _ in range(int(teachers))]
opt = make_optimizer(model, cfg)
batches = train.epoch_batches(cfg.batch_size, 0, 1)
loss = "online_kd" if tutors else "ce"
for _ in range(3):  # the first minibatches (with streaming: the first buffer read)
    data_, idx = next(batches)
    train_step(model, opt, data_, idx, cfg, torch.device("cpu"), loss, 0, tutors)
first = time.perf_counter() - t0
t1, n = time.perf_counter(), 0
for data_, idx in batches:
    train_step(model, opt, data_, idx, cfg, torch.device("cpu"), loss, 0, tutors)
    n += len(idx)
    if n >= int(steps) * cfg.batch_size:
        break
print(json.dumps({"frames": len(train), "seconds_to_first_steps": round(first, 2),
                  "frames_per_second": round(n / (time.perf_counter() - t1))}))
"""


def nnet_training(config: Path, data: Path, ali: Path, replicas: list[int], steps: int, work: Path) -> list:
    """Loading the frames and `steps` minibatches, in memory and streamed, on the training set
    replicated; at 1x also a student with the members run on each minibatch (online teachers)."""
    out = []
    members = int(__import__("yaml").safe_load(config.read_text())["num_members"])
    for k in replicas:
        dd, da = replicate(data, ali, k, work / f"rep_{k}")
        for where, teachers in [("ram", 0), ("stream", 0)] + ([("ram", members)] if k == 1 else []):
            log = work / "log" / f"train_{k}_{where}_{teachers}.log"
            m = measure([sys.executable, "-c", TRAIN, str(config), dd, da, where, str(steps), str(teachers)], log,
                        {"OMP_NUM_THREADS": "2"})
            m |= json.loads(log.read_text().splitlines()[-1])
            out.append({"replicas": k, "train_data": where, "online_teachers": teachers, **m})
            print("train", out[-1], flush=True)
        shutil.rmtree(work / f"rep_{k}")
    return out


def soft_targets(config: Path, data: Path, ali: Path, replicas: list[int], work: Path) -> list:
    """make-soft-targets with the recipe's members (random weights) on the training set
    replicated `replicas` times; each set's archives are removed once measured."""
    import torch

    from asrkd.config import load_config
    from asrkd.hmm.alignment import AlignmentDir
    from asrkd.nnet.config import NnetConfig
    from asrkd.nnet.model import build_model, save_nnet

    cfg = load_config(NnetConfig, config)
    num_pdfs = AlignmentDir(ali).num_pdfs
    members = []
    for k in range(cfg.num_members):
        torch.manual_seed(k)
        save_nnet(work / f"member_{k}/final.pt", build_model(cfg.arch, 40, num_pdfs, cfg.hidden, cfg.layers,
                                                             cfg.left_context, cfg.right_context, 0.0))
        members += ["--nnet", work / f"member_{k}"]
    out = []
    for k in replicas:
        rep = work / f"soft_rep_{k}"
        dd, _ = replicate(data, ali, k, rep)
        soft = rep / "soft"
        m = measure(asrkd("make-soft-targets", "--config", config, *members, dd, soft),
                    work / "log" / f"soft_targets_{k}.log", {"OMP_NUM_THREADS": "2"})
        info, hours = json.loads((soft / f"soft_T{cfg.temperature:g}/info.json").read_text()), audio_hours(dd)
        out.append({"replicas": k, "hours": round(hours, 3), "frames": info["frames"], **m,
                    "temperatures": len(cfg.temperatures), "members": cfg.num_members, "top_k": cfg.top_k,
                    "bytes_topk_per_hour": round(info["bytes_topk"] / hours),
                    "bytes_dense_float32_per_hour": round(info["bytes_dense_float32"] / hours)})
        print("soft targets", out[-1], flush=True)
        shutil.rmtree(rep)
    return out


def fit(hours: list[float], values: list[float]) -> dict:
    """Least-squares `a + b * hours`, the log-log slope (1: linear growth), and the line at
    100 h and 1000 h."""
    b, a = np.polyfit(hours, values, 1)
    slope = np.polyfit(np.log(hours), np.log(values), 1)[0] if min(values) > 0 else None
    return {"a": round(float(a), 3), "b_per_hour": round(float(b), 3),
            "loglog_slope": None if slope is None else round(float(slope), 2),
            "at_100h": round(float(a + 100 * b), 1), "at_1000h": round(float(a + 1000 * b), 1)}


def summarise(res: dict) -> dict:
    """Fits of every measured stage: GMM stages' seconds and MB against hours of audio;
    training's memory against hours (in RAM, streamed) and its epoch time at the measured
    rate; soft targets' seconds and top-k storage per hour."""
    out = {}
    if runs := res.get("gmm", {}).get("runs"):
        hours = [r["hours"] for r in runs]
        for stage in runs[0]["stages"]:
            out[f"gmm_{stage}_seconds"] = fit(hours, [r["stages"][stage]["seconds"] for r in runs])
            out[f"gmm_{stage}_peak_rss_mb"] = fit(hours, [r["stages"][stage]["peak_rss_mb"] for r in runs])
    if (train := res.get("nnet", {}).get("training")) and runs:
        frames_per_hour = runs[-1]["frames"] / runs[-1]["hours"]
        for where in ("ram", "stream"):
            rows = [t for t in train if t["train_data"] == where and not t["online_teachers"]]
            hours = [t["frames"] / frames_per_hour for t in rows]
            out[f"train_{where}_peak_rss_mb"] = fit(hours, [t["peak_rss_mb"] for t in rows])
            out[f"train_{where}_seconds_to_first_steps"] = fit(hours, [t["seconds_to_first_steps"] for t in rows])
            fps = float(np.mean([t["frames_per_second"] for t in rows]))
            out[f"train_{where}_epoch_seconds_per_hour"] = round(frames_per_hour / fps, 1)
        online = [t for t in train if t["online_teachers"]]
        plain = [t for t in train if t["replicas"] == 1 and t["train_data"] == "ram" and not t["online_teachers"]]
        if online and plain:
            out["online_teachers_step_cost"] = round(plain[0]["frames_per_second"] / online[0]["frames_per_second"], 2)
    if soft := res.get("soft_targets", {}).get("runs"):
        hours = [r["hours"] for r in soft]
        out["soft_targets_seconds"] = fit(hours, [r["seconds"] for r in soft])
        out["soft_targets_peak_rss_mb"] = fit(hours, [r["peak_rss_mb"] for r in soft])
        out["soft_targets_topk_mb_per_hour_per_temperature"] = round(soft[-1]["bytes_topk_per_hour"] / 1e6, 1)
        out["soft_targets_dense_mb_per_hour"] = round(soft[-1]["bytes_dense_float32_per_hour"] / 1e6, 1)
    return out


def plot(res: dict, png: Path) -> None:
    """Time of the GMM stages and soft targets, and training's peak memory, against hours."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    runs = res.get("gmm", {}).get("runs", [])
    for stage in (runs[0]["stages"] if runs else []):
        ax1.plot([r["hours"] for r in runs], [r["stages"][stage]["seconds"] for r in runs], "o-", label=stage)
    if soft := res.get("soft_targets", {}).get("runs"):
        ax1.plot([r["hours"] for r in soft], [r["seconds"] for r in soft], "s--", label="soft targets")
    ax1.set(xlabel="hours of training audio", ylabel="seconds", title="time per stage", xscale="log", yscale="log")
    ax1.legend(fontsize=7)
    if (train := res.get("nnet", {}).get("training")) and runs:
        frames_per_hour = runs[-1]["frames"] / runs[-1]["hours"]
        for where in ("ram", "stream"):
            rows = [t for t in train if t["train_data"] == where and not t["online_teachers"]]
            ax2.plot([t["frames"] / frames_per_hour for t in rows], [t["peak_rss_mb"] for t in rows], "o-",
                     label=f"training, {where}")
    if soft:
        ax2.plot([r["hours"] for r in soft], [r["peak_rss_mb"] for r in soft], "s--", label="soft targets")
    ax2.set(xlabel="hours of training audio", ylabel="peak RSS (MB)", title="memory")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe-dir", default=str(ROOT / "recipes/speechocean762"),
                   help="recipe with stages 0-1 done (and stage 7 for soft targets)")
    p.add_argument("--train-set", default="train", help="training data dir under <recipe-dir>/data")
    p.add_argument("--fractions", default="0.25,0.5,1", help="fractions of the training utterances for the GMM stages")
    p.add_argument("--replicas", default="1,4,16", help="times the training set is replicated for neural training")
    p.add_argument("--train-steps", type=int, default=300, help="minibatches timed per training run")
    p.add_argument("--soft-replicas", default="1,4,16", help="times the training set is replicated for soft targets")
    p.add_argument("--work", default="/tmp/asrkd-scale", help="scratch dir for the replicated data and logs")
    p.add_argument("--parts", default="gmm,nnet,soft", help="what to measure (the JSON keeps the other parts' results)")
    p.add_argument("--out", default=str(ROOT / "bench/results/scale.json"), help="JSON results (a PNG is written beside it)")
    a = p.parse_args()
    recipe, work = Path(a.recipe_dir).resolve(), Path(a.work)
    sizes = {"mono_gauss": 1000, "num_leaves": 1500, "tri_gauss": 8000,
             "tree_opts": ["--no-split-silence", "--cluster-leaves"]}
    out = Path(a.out)
    res = json.loads(out.read_text()) if out.is_file() else {}
    parts = a.parts.split(",")
    if "gmm" in parts:
        res["gmm"] = {"command": " ".join(sys.argv), "environment": environment(),
                      "runs": [gmm_stages(recipe, a.train_set, f, work, sizes) for f in map(float, a.fractions.split(","))]}
        out.write_text(json.dumps(res, indent=2))
    config = recipe / "conf/nnet.yaml"
    if "nnet" in parts:
        last = work / f"gmm_{float(a.fractions.split(',')[-1]):g}"
        res["nnet"] = {"command": " ".join(sys.argv), "environment": environment(), "train_steps": a.train_steps,
                       "training": nnet_training(config, last / "data", last / "tri_ali",
                                                 [int(k) for k in a.replicas.split(",")], a.train_steps, work)}
        out.write_text(json.dumps(res, indent=2))
    if "soft" in parts:
        res["soft_targets"] = {"command": " ".join(sys.argv), "environment": environment(),
                               "runs": soft_targets(config, recipe / "data" / a.train_set, recipe / "exp/tri_ali",
                                                    [int(k) for k in a.soft_replicas.split(",")], work)}
    res["fits"] = summarise(res)
    out.write_text(json.dumps(res, indent=2))
    plot(res, out.with_suffix(".png"))
    print(json.dumps(res["fits"], indent=1))


if __name__ == "__main__":
    main()

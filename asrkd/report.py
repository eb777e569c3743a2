"""The comparison of baseline, ensemble and distilled models (Hinton et al. 2015, Table 1):
`results.json`, `results.md` and plots, gathered from the systems' exp dirs.

Layout read: a GMM dir (`exp/tri`) and a neural dir (`exp/nnet`) with `member_<k>/`,
`ensemble/` and `distilled/`. Each system dir holds `frame_accuracy_<set>.json`
(the ensemble's lists every member) and `decode_<set>/decode_info.json`; models hold
`final.pt` and `log/train.json`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from asrkd.utils import AsrkdError, atomic_file, write_list

log = logging.getLogger(__name__)

# ../shared/PAPER.md, Table 1 (2000 h voice search, 14,000 senones, 8 x 2560 DNNs, 10 members)
PAPER = {"baseline": (58.9, 10.9), "ensemble": (61.1, 10.7), "distilled": (60.8, 10.7)}


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _decode(sys_dir: Path, dset: str) -> dict:
    info = _json(sys_dir / f"decode_{dset}" / "decode_info.json") or {}
    return {f"{dset}_wer": info.get("wer"), f"{dset}_rtf": info.get("rtf_per_core"),
            f"{dset}_lmwt": (info.get("best_lmwt"), info.get("best_wip")) if info else None}


def _nnet_info(model_dir: Path) -> dict:
    from asrkd.nnet.model import load_nnet

    m = load_nnet(model_dir)
    hist = _json(model_dir / "log" / "train.json") or []
    return {"params": m.num_params(), "mflops_per_frame": m.flops_per_frame() / 1e6,
            "train_seconds": sum(h["train_seconds"] + h["eval_seconds"] for h in hist), "epochs": len(hist),
            "arch": f"{m.arch['hidden']}x{m.arch['layers']}"}


def _gmm_info(gmm_dir: Path) -> dict:
    from asrkd.hmm.align import load_model

    gmm, _ = load_model(gmm_dir)
    hist = _json(gmm_dir / "log" / "train.json") or []
    n = gmm.num_gauss()
    return {"params": n * (2 * gmm.dim + 1), "mflops_per_frame": 4 * n * gmm.dim / 1e6,
            "train_seconds": sum(h.get("seconds", 0) for h in hist), "arch": f"{n} Gaussians"}


def gather(gmm_dir: str | Path, nnet_dir: str | Path, sets: tuple[str, str] = ("dev", "test")) -> dict:
    """Every system's numbers, plus the share of the ensemble's gain the student keeps."""
    gmm_dir, nnet_dir = Path(gmm_dir), Path(nnet_dir)
    members = sorted(nnet_dir.glob("member_*"), key=lambda p: int(p.name.split("_")[1]))
    if not members:
        raise AsrkdError(f"{nnet_dir}: no member_<k> dirs (run train-ensemble first)")
    rows = {}
    ens_fa = {s: _json(nnet_dir / "ensemble" / f"frame_accuracy_{s}.json") for s in sets}
    for s in sets:
        if ens_fa[s] is None:
            raise AsrkdError(f"{nnet_dir}/ensemble/frame_accuracy_{s}.json: missing (run frame-accuracy first)")

    def fa(d: Path, s: str):
        r = _json(d / f"frame_accuracy_{s}.json")
        return 100 * r["frame_accuracy"] if r else None

    rows["tri GMM"] = {**_gmm_info(gmm_dir), **{f"{s}_frame_acc": fa(gmm_dir, s) for s in sets},
                       **{k: v for s in sets for k, v in _decode(gmm_dir, s).items()}}
    member_infos = [_nnet_info(m) for m in members]
    rows["baseline (member 0)"] = {**member_infos[0],
                                   **{f"{s}_frame_acc": 100 * ens_fa[s]["members"][0]["frame_accuracy"] for s in sets},
                                   **{k: v for s in sets for k, v in _decode(members[0], s).items()}}
    rows["mean of members"] = {**member_infos[0], "train_seconds": sum(i["train_seconds"] for i in member_infos) / len(members),
                               **{f"{s}_frame_acc": 100 * ens_fa[s]["member_mean"] for s in sets},
                               **{f"{s}_frame_acc_range": [100 * ens_fa[s]["member_min"], 100 * ens_fa[s]["member_max"]]
                                  for s in sets}}
    rows[f"ensemble of {len(members)}"] = {
        "params": sum(i["params"] for i in member_infos), "arch": f"{len(members)} x {member_infos[0]['arch']}",
        "mflops_per_frame": sum(i["mflops_per_frame"] for i in member_infos),
        "train_seconds": sum(i["train_seconds"] for i in member_infos),
        **{f"{s}_frame_acc": 100 * ens_fa[s]["frame_accuracy"] for s in sets},
        **{k: v for s in sets for k, v in _decode(nnet_dir / "ensemble", s).items()}}
    dist = nnet_dir / "distilled"
    if (dist / "final.pt").is_file():
        rows["distilled"] = {**_nnet_info(dist), **{f"{s}_frame_acc": fa(dist, s) for s in sets},
                             **{k: v for s in sets for k, v in _decode(dist, s).items()}}
    base, ens = rows["baseline (member 0)"], rows[f"ensemble of {len(members)}"]
    kept = {}
    if "distilled" in rows:
        d = rows["distilled"]
        for s in sets:
            for key, sign in ((f"{s}_frame_acc", 1), (f"{s}_wer", -1)):
                if None not in (base[key], ens[key], d[key]) and sign * (ens[key] - base[key]) > 0:
                    kept[key] = (d[key] - base[key]) / (ens[key] - base[key])  # only where the ensemble gained
    return {"sets": list(sets), "systems": rows, "student_keeps": kept, "paper_table1": PAPER, "members": [str(m) for m in members],
            "soft_targets": {p.name: _json(p / "info.json") for p in sorted(nnet_dir.glob("soft_T*"))}}


def _f(x, fmt="{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def write_markdown(res: dict, path: Path) -> None:
    rows, (tune, test) = res["systems"], res["sets"]
    lines = ["# Baseline, ensemble and distilled acoustic models", "",
             "Frame accuracy is the argmax senone against the tri forced alignment; WER uses the LM weight and "
             f"insertion penalty chosen on {tune}. MFLOP/frame counts the forward pass (a GMM: 4 x dim per "
             "Gaussian); training time is wall-clock on the machine that ran the recipe.", "",
             f"| system | model | {tune} frame acc. | {test} frame acc. | {tune} WER | {test} WER | (LMWT, penalty) | "
             f"parameters | MFLOP/frame | decode RTF ({test}) | training |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        rng = r.get(f"{test}_frame_acc_range")
        test_fa = _f(r.get(f"{test}_frame_acc")) + (f" ({rng[0]:.2f}–{rng[1]:.2f})" if rng else "")
        lm = r.get(f"{tune}_lmwt")
        lines.append(f"| {name} | {r.get('arch', '')} | {_f(r.get(f'{tune}_frame_acc'))} | {test_fa} | "
                     f"{_f(r.get(f'{tune}_wer'))} | {_f(r.get(f'{test}_wer'))} | "
                     f"{f'{lm[0]:g}, {lm[1]:g}' if lm else '–'} | {r['params'] / 1e6:.2f} M | "
                     f"{r['mflops_per_frame']:.1f} | {_f(r.get(f'{test}_rtf'), '{:.3f}')} | "
                     f"{r['train_seconds'] / 60:.1f} min |")
    kept = res["student_keeps"]
    if kept:
        lines += ["", "Share of the ensemble's gain over the baseline that the distilled model keeps, where the "
                  "ensemble gained (paper: 86% of frame accuracy, 100% of WER):", ""]
        lines += [f"- {k.replace('_', ' ')}: {100 * v:.0f}%" for k, v in kept.items()]
    lines += ["", "## Paper, Table 1 (Hinton et al. 2015: 2000 h, 14,000 senones, 10 x 85M-weight DNNs)", "",
              "| system | test frame accuracy | WER |", "|---|---|---|"]
    lines += [f"| {k} | {fa}% | {w}% |" for k, (fa, w) in res["paper_table1"].items()]
    if res["soft_targets"]:
        lines += ["", "## Soft targets", "", "Stored: the ensemble's top k per frame, the rest of its mass spread evenly "
                  "over the other senones.", "",
                  "| dir | T | top-k | mass in the top k | KL(dense ‖ stored) | size | dense float32 |",
                  "|---|---|---|---|---|---|---|"]
        for name, i in res["soft_targets"].items():
            if i:
                lines.append(f"| {name} | {i['temperature']:g} | {i['top_k']} | {i['mean_topk_mass']:.4f} | "
                             f"{i['kl_dense_vs_stored']:.4f} | {i['bytes_topk'] / 1e6:.0f} MB | "
                             f"{i['bytes_dense_float32'] / 1e6:.0f} MB |")
    lines += ["", "Plots: `dev_frame_accuracy.png` (per epoch), `wer.png` (test WER)."]
    write_list(path, lines)


def plot(res: dict, nnet_dir: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, m in enumerate(res["members"]):
        h = _json(Path(m) / "log" / "train.json") or []
        ax.plot([e["epoch"] for e in h], [100 * e["dev_frame_accuracy"] for e in h], color="tab:blue",
                alpha=1.0 if i == 0 else 0.3, label="baseline (member 0)" if i == 0 else None)
    h = _json(nnet_dir / "distilled" / "log" / "train.json") or []
    ax.plot([e["epoch"] for e in h], [100 * e["dev_frame_accuracy"] for e in h], color="tab:red", label="distilled")
    ens = [r for k, r in res["systems"].items() if k.startswith("ensemble")][0]
    ax.axhline(ens[f"{res['sets'][0]}_frame_acc"], color="tab:green", ls="--", label="ensemble")
    ax.set(xlabel="epoch", ylabel="dev frame accuracy (%)", title="Dev frame accuracy per epoch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "dev_frame_accuracy.png", dpi=100)
    plt.close(fig)
    test = res["sets"][1]
    named = [(k, r[f"{test}_wer"]) for k, r in res["systems"].items() if r.get(f"{test}_wer") is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([k for k, _ in named], [w for _, w in named], color="tab:gray")
    for i, (_, w) in enumerate(named):
        ax.text(i, w, f"{w:.2f}", ha="center", va="bottom")
    ax.set(ylabel=f"{test} WER (%)", title=f"WER on {test}")
    ax.tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    fig.savefig(out / "wer.png", dpi=100)
    plt.close(fig)


def compare(gmm_dir: str | Path, nnet_dir: str | Path, out_dir: str | Path,
            sets: tuple[str, str] = ("dev", "test")) -> dict:
    """Write out_dir/results.{json,md} and the plots; returns the results."""
    out_dir = Path(out_dir)
    res = gather(gmm_dir, nnet_dir, sets)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_dir / "results.json") as f:
        json.dump(res, f, indent=2)
    write_markdown(res, out_dir / "results.md")
    plot(res, Path(nnet_dir), out_dir)
    log.info("%s: results.md, results.json, dev_frame_accuracy.png, wer.png", out_dir)
    return res

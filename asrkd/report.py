"""The comparison of baseline, ensemble and distilled models (Hinton et al. 2015, Table 1)
and the experiments around it: `results.json`, `results.md` and plots, gathered from the
systems' exp dirs.

Layout read: a GMM dir (`exp/tri`) and a neural dir (`exp/nnet`) with `member_<k>/`,
`ensemble/`, `distilled` (a link to the chosen `student_T<T>/`), and where run, the other
students of the temperature sweep, `student_mixup/` (distilled from the members run on
mixed-up windows), `switched/` (teacher switching), `subset_hard/`,
`subset_soft/` (section 6) and `subset_mixup/` (its teachers run on mixed-up windows). Each
system dir holds `frame_accuracy_<set>.json` (the ensemble's lists every member, the
geometric mean and the ensemble-size curve) and
`decode_<set>/decode_info.json`; models hold `final.pt` and `log/train.json`. The results
name the environment (`asrkd.environment`) of the report, of each model file and of each decode.
"""

from __future__ import annotations

import json
import logging
import re
import textwrap
from pathlib import Path

from asrkd.checkpoint import read_environment
from asrkd.config import load_config
from asrkd.environment import environment
from asrkd.nnet.config import NnetConfig
from asrkd.nnet.expdir import NnetExpDir, decode_dir, frame_accuracy_file
from asrkd.utils import AsrkdError, atomic_file, write_list

log = logging.getLogger(__name__)

# ../shared/PAPER.md, Table 1 (2000 h voice search, 14,000 senones, 8 x 2560 DNNs, 10 members)
PAPER = {"baseline": (58.9, 10.9), "ensemble": (61.1, 10.7), "distilled": (60.8, 10.7)}
SUBSET_MIXUP = "subset, soft targets from the ensemble run on mixed-up windows"
STUDENT_MIXUP = "distilled, members run on mixed-up windows"
# section 6: (train, test) frame accuracy
PAPER_SECTION6 = {"100% of train, hard targets": (63.4, 58.9), "3%, hard targets": (67.3, 44.5),
                  "3%, soft targets": (65.4, 57.0)}


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _scores(d: Path, sets, fa: dict | None = None) -> dict:
    """A system's frame accuracy (senone and phone level) and decoding results per set; `fa`
    gives the frame-accuracy records instead of d/frame_accuracy_<set>.json."""
    row = {}
    for s in sets:
        r = fa[s] if fa else _json(frame_accuracy_file(d, s))
        info = _json(decode_dir(d, s) / "decode_info.json") or {}
        row |= {f"{s}_frame_acc": 100 * r["frame_accuracy"] if r else None,
                f"{s}_phone_acc": 100 * r["phone_frame_accuracy"] if r and "phone_frame_accuracy" in r else None,
                f"{s}_wer": info.get("wer"), f"{s}_rtf": info.get("rtf_per_core"),
                f"{s}_lmwt": (info["best_lmwt"], info["best_wip"]) if info else None,
                f"{s}_tuned_on": info.get("tuned_on")}
    return row


def _nnet_info(model_dir: Path) -> dict:
    from asrkd.nnet.model import load_nnet

    m = load_nnet(model_dir)
    hist = _json(model_dir / "log" / "train.json") or []
    best = max(hist, key=lambda h: h["dev_frame_accuracy"])["epoch"] if hist else None
    max_epochs = load_config(NnetConfig, model_dir / "nnet.yaml").max_epochs if (model_dir / "nnet.yaml").is_file() \
        else None
    kind = m.arch.get("type", "dnn")
    return {"params": m.num_params(), "mflops_per_frame": m.flops_per_frame() / 1e6,
            "train_seconds": sum(h["train_seconds"] + h["eval_seconds"] for h in hist), "epochs": len(hist),
            "best_epoch": best, "still_improving": bool(hist) and best == len(hist) == max_epochs,
            "arch": f"{'' if kind == 'dnn' else kind + ' '}{m.arch['hidden']}x{m.arch['layers']}"}


def _gmm_info(gmm_dir: Path) -> dict:
    from asrkd.hmm.align import load_model

    gmm, _ = load_model(gmm_dir)
    hist = _json(gmm_dir / "log" / "train.json") or []
    n = gmm.num_gauss()
    return {"params": n * (2 * gmm.dim + 1), "mflops_per_frame": 4 * n * gmm.dim / 1e6,
            "train_seconds": sum(h.get("seconds", 0) for h in hist), "arch": f"{n} Gaussians"}


def _stage_times(path: Path | None) -> dict:
    """Seconds per stage from run.sh's stage_times.tsv, the latest run of each stage."""
    times = {}
    if path and Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            f = line.split("\t")
            if len(f) >= 2 and f[0].isdigit() and f[1].isdigit():
                times[int(f[0])] = int(f[1])
    return dict(sorted(times.items()))


def model_environments(gmm_dir: Path, nnet_dir: Path, members: list[Path]) -> dict:
    """{model dir: the environment its final.pt was trained in, None if not recorded}: the
    GMM, the members, then the other models of nnet_dir (links such as `distilled` left out)."""
    others = sorted(d for d in nnet_dir.iterdir() if d not in members and not d.is_symlink()
                    and not d.name.startswith(".") and (d / "final.pt").is_file())
    return {_name(d, gmm_dir, nnet_dir): read_environment(d / "final.pt") for d in [gmm_dir, *members, *others]
            if (d / "final.pt").is_file()}


def decode_environments(gmm_dir: Path, nnet_dir: Path) -> dict:
    """{decode dir: the environment of its decode_info.json, None if not recorded}."""
    infos = [*sorted(gmm_dir.glob("decode_*/decode_info.json")),
             *(p for p in sorted(nnet_dir.glob("*/decode_*/decode_info.json"))
               if not p.parent.parent.is_symlink() and not p.parent.parent.name.startswith("."))]
    return {_name(p.parent, gmm_dir, nnet_dir): (_json(p) or {}).get("environment") for p in infos}


def _name(d: Path, gmm_dir: Path, nnet_dir: Path) -> str:
    """A dir named from the GMM dir's or the neural dir's parent (tri, tri/decode_test, nnet/member_0)."""
    top = gmm_dir if d.is_relative_to(gmm_dir) else nnet_dir
    return str(d.relative_to(top.parent))


def gather(gmm_dir: str | Path, nnet_dir: str | Path, sets: tuple[str, str] = ("dev", "test"),
           stage_times: str | Path | None = None) -> dict:
    """Every system's numbers, the share of the ensemble's gain the student keeps, and each
    experiment that was run (temperature sweep, section 6, ensemble variants, seeds)."""
    gmm_dir, nnet_dir, exp = Path(gmm_dir), Path(nnet_dir), NnetExpDir(nnet_dir)
    tune, test = sets
    members = exp.members()
    if not members:
        raise AsrkdError(f"{nnet_dir}: no finished member_<k> dirs (run train-ensemble first)")
    ens_fa = {s: _json(frame_accuracy_file(exp.ensemble, s)) for s in sets}
    for s in sets:
        if ens_fa[s] is None:
            raise AsrkdError(f"{frame_accuracy_file(exp.ensemble, s)}: missing (run frame-accuracy first)")
        measured = [Path(m["model"]).name for m in ens_fa[s].get("members", [])]
        if measured != [m.name for m in members]:
            raise AsrkdError(f"{frame_accuracy_file(exp.ensemble, s)}: measured with members {measured}, but "
                             f"{nnet_dir} has finished {[m.name for m in members]}; "
                             "train the missing members or redo the ensemble's frame accuracy (--force)")
    rows = {"tri GMM": {**_gmm_info(gmm_dir), **_scores(gmm_dir, sets)}}
    member_infos = [_nnet_info(m) for m in members]
    rows["baseline (member 0)"] = {**member_infos[0],
                                   **_scores(members[0], sets, {s: ens_fa[s]["members"][0] for s in sets})}
    rows["mean of members"] = {**member_infos[0], "train_seconds": sum(i["train_seconds"] for i in member_infos) / len(members),
                               **{f"{s}_frame_acc": 100 * ens_fa[s]["member_mean"] for s in sets},
                               **{f"{s}_frame_acc_range": [100 * ens_fa[s]["member_min"], 100 * ens_fa[s]["member_max"]]
                                  for s in sets}}
    ensemble = f"ensemble of {len(members)}"
    rows[ensemble] = {"params": sum(i["params"] for i in member_infos), "arch": f"{len(members)} x {member_infos[0]['arch']}",
                      "mflops_per_frame": sum(i["mflops_per_frame"] for i in member_infos),
                      "train_seconds": sum(i["train_seconds"] for i in member_infos),
                      **_scores(exp.ensemble, sets, ens_fa)}
    chosen, missing = exp.chosen_student(), []
    if chosen is not None and not (chosen / "final.pt").is_file():
        raise AsrkdError(f"{exp.distilled} -> {chosen.name}: no final.pt there; "
                         "rerun select-model or train that student")
    if chosen is None:
        missing.append(f"distilled student ({exp.distilled} missing: run select-model over the students)")
    else:
        rows[f"distilled (T={exp.temperature(chosen):g})"] = {**_nnet_info(chosen), **_scores(chosen, sets)}
    if ((mixed := exp.student_mixup) / "final.pt").is_file():
        rows[f"{STUDENT_MIXUP} (T={exp.temperature(mixed):g})"] = {**_nnet_info(mixed), **_scores(mixed, sets)}
    base, ens = rows["baseline (member 0)"], rows[ensemble]
    kept = {}  # per student: the share of the ensemble's gain it keeps, only where the ensemble gained
    for name, student in rows.items():
        if name.startswith("distilled"):
            kept[name] = {key: (student[key] - base[key]) / (ens[key] - base[key])
                          for s in sets for key, sign in ((f"{s}_frame_acc", 1), (f"{s}_wer", -1))
                          if None not in (base[key], ens[key], student[key]) and sign * (ens[key] - base[key]) > 0}
    sweep = {f"T={exp.temperature(d):g}": {**_nnet_info(d), **_scores(d, sets), "chosen": d.resolve() == chosen}
             for d in exp.students()}
    if sweep:
        sweep = {"hard targets only (member 0)": {**base, "chosen": False}, **sweep}
    section6 = {}
    for name, d in (("100% of train, hard targets (member 0)", members[0]),
                    ("subset, hard targets", exp.section6("hard")), ("subset, soft targets", exp.section6("soft")),
                    (SUBSET_MIXUP, exp.section6("mixup"))):
        if (d / "final.pt").is_file():
            tr = _json(frame_accuracy_file(d, "train"))
            row = base if d == members[0] else {**_nnet_info(d), **_scores(d, sets)}
            section6[name] = {**row, "train_frames": tr and tr["frames"],
                              "train_frame_acc": tr and 100 * tr["frame_accuracy"],
                              "history": _json(d / "log" / "train.json") or []}
    hard, full = (section6.get(k, {}).get(f"{test}_frame_acc") for k in
                  ("subset, hard targets", "100% of train, hard targets (member 0)"))
    recovered = {}  # share of the test gap between the subset's hard model and the full baseline
    for k in ("subset, soft targets", SUBSET_MIXUP):
        if None not in (hard, full, acc := section6.get(k, {}).get(f"{test}_frame_acc")) and full != hard:
            recovered[k] = (acc - hard) / (full - hard)
    variants = {s: {"arithmetic": 100 * ens_fa[s]["frame_accuracy"],
                    "geometric": 100 * ens_fa[s]["geometric"]["frame_accuracy"] if "geometric" in ens_fa[s] else None,
                    "size_curve": {int(k): 100 * v for k, v in ens_fa[s].get("size_curve", {}).items()}} for s in sets}
    switched, own = exp.switched, exp.soft_target_dirs(members=True)
    if (switched / "final.pt").is_file():
        t = exp.soft_temperature(own[0]) if own else None
        variants["teacher_switching"] = {  # against the sweep's student on the averaged targets at that T
            "temperature": t, "switched": {**_nnet_info(switched), **_scores(switched, sets)},
            "averaged": sweep.get(f"T={t:g}") if t else None}
    seeds = {}
    for s in sets:
        accs = [100 * m["frame_accuracy"] for m in ens_fa[s]["members"]]
        mean = sum(accs) / len(accs)
        seeds[s] = {"frame_acc": accs, "mean": mean, "min": min(accs), "max": max(accs),
                    "std": (sum((a - mean) ** 2 for a in accs) / max(len(accs) - 1, 1)) ** 0.5}
    soft_dirs = exp.soft_target_dirs()
    return {"sets": list(sets), "systems": rows, "student_keeps": kept, "paper_table1": PAPER,
            "members": [str(m) for m in members], "temperature_sweep": sweep,
            "chosen_student": chosen.name if chosen else None,
            "section6": section6, "section6_recovered": recovered, "paper_section6": PAPER_SECTION6,
            "ensemble_variants": variants, "seeds": seeds, "stage_seconds": _stage_times(stage_times),
            "soft_targets": {p.name: _json(p / "info.json") for p in soft_dirs},
            "per_member_soft_targets": len(own), "missing": missing,
            "environment": environment(), "model_environments": model_environments(gmm_dir, nnet_dir, members),
            "decode_environments": decode_environments(gmm_dir, nnet_dir)}


def _f(x, fmt="{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def _lm(r: dict, s: str) -> str:
    lm = r.get(f"{s}_lmwt")
    return f"{lm[0]:g}, {lm[1]:g}" if lm else "–"


def write_markdown(res: dict, path: Path) -> None:
    rows, (tune, test) = res["systems"], res["sets"]
    lines = ["# Baseline, ensemble and distilled acoustic models", "",
             "Frame accuracy is the argmax senone against the tri forced alignment (phone level: the senone's "
             "phone); for the tri GMM that alignment is its own Viterbi path, which favours it. WER uses the LM "
             f"weight and insertion penalty chosen on {tune}. MFLOP/frame counts the "
             "forward pass (a GMM: 4 x dim per Gaussian); training time is wall-clock on the machine that ran "
             "the recipe; the decode RTF is per core and includes the acoustic model.", ""]
    table = []
    for name, r in rows.items():
        rng = r.get(f"{test}_frame_acc_range")
        table.append([name, r.get("arch", ""), _f(r.get(f"{tune}_frame_acc")),
                      _f(r.get(f"{test}_frame_acc")) + (f" ({rng[0]:.2f}–{rng[1]:.2f})" if rng else ""),
                      _f(r.get(f"{test}_phone_acc")), _f(r.get(f"{tune}_wer")), _f(r.get(f"{test}_wer")),
                      _lm(r, test), f"{r['params'] / 1e6:.2f} M", f"{r['mflops_per_frame']:.1f}",
                      _f(r.get(f"{test}_rtf"), "{:.3f}"), f"{r['train_seconds'] / 60:.1f} min"])
    lines += _table(["system", "model", f"{tune} frame acc.", f"{test} frame acc.", f"{test} phone acc.",
                     f"{tune} WER", f"{test} WER", "(LMWT, penalty)", "parameters", "MFLOP/frame",
                     f"decode RTF ({test})", "training"], table)
    lines += ["", f"Not in this table: {'; '.join(res['missing'])}."] if res.get("missing") else []
    improving = [name for name, r in rows.items() if r.get("still_improving")]
    if improving:
        lines += ["", f"Best epoch was the last (still improving at max_epochs): {', '.join(improving)}."]
    if res["student_keeps"]:
        lines += ["", "Share of the ensemble's gain over the baseline that each distilled model keeps, where the "
                  "ensemble gained (paper: 86% of frame accuracy, 100% of WER):", ""]
        lines += [f"- {name}: " + ", ".join(f"{k.replace('_', ' ')} {100 * v:.1f}%" for k, v in kept.items())
                  for name, kept in res["student_keeps"].items()]
    if any(k.startswith(STUDENT_MIXUP) for k in rows):
        lines += ["", f"{STUDENT_MIXUP}: beyond the paper, a student of the same size distilled at the chosen T "
                  "from the members run on every minibatch, whose windows are mixed in pairs (mixup, "
                  "`teacher_mixup`), instead of from stored soft targets (function matching, Beyer et al. 2022)."]
    lines += ["", "## Paper, Table 1 (Hinton et al. 2015: 2000 h, 14,000 senones, 10 x 85M-weight DNNs)", ""]
    lines += _table(["system", "test frame accuracy", "WER"],
                    [[k, f"{fa}%", f"{w}%"] for k, (fa, w) in res["paper_table1"].items()])
    if res["temperature_sweep"]:
        lines += ["", "## Temperature sweep", "",
                  f"Students distilled at each T (plus the hard targets' cross-entropy at the config's "
                  f"`hard_weight`); the one with the best {tune} frame accuracy is `distilled` (**bold**). The "
                  "hard-targets-only row is the "
                  "baseline. The chosen student's LM weight and penalty are tuned on "
                  f"{tune}; the other students are decoded at those.", ""]
        lines += _table(["student", f"{tune} frame acc.", f"{test} frame acc.", f"{test} phone acc.", f"{tune} WER",
                         f"{test} WER", "epochs"],
                        [[f"**{k}**" if r["chosen"] else k, _f(r.get(f"{tune}_frame_acc")), _f(r.get(f"{test}_frame_acc")),
                          _f(r.get(f"{test}_phone_acc")), _f(r.get(f"{tune}_wer")), _f(r.get(f"{test}_wer")),
                          r.get("epochs", "–")] for k, r in res["temperature_sweep"].items()])
    if res["section6"]:
        lines += ["", "## Soft targets as a regulariser (paper section 6)", "",
                  "The same network trained on a seeded subset of the training utterances, with its hard targets "
                  "or with the full-data ensemble's soft targets (the chosen T); training accuracy is on the data "
                  "each model was trained on. Curves: `section6.png`.", ""]
        lines += _table(["model", "training frames", "train frame acc.", f"{tune} frame acc.", f"{test} frame acc.",
                         "epochs (best)"],
                        [[k, _f(r["train_frames"], "{:,}"), _f(r["train_frame_acc"]), _f(r.get(f"{tune}_frame_acc")),
                          _f(r.get(f"{test}_frame_acc")), f"{r['epochs']} ({r['best_epoch']})"]
                         for k, r in res["section6"].items()])
        lines += [""] + [f"- {k}: recovers {100 * r:.1f}% of the {test} frame-accuracy gap between the subset's "
                         "hard-target model and the full-data baseline (paper, soft targets: 87%)."
                         for k, r in res["section6_recovered"].items()]
        if SUBSET_MIXUP in res["section6"]:
            lines += [f"- {SUBSET_MIXUP}: beyond the paper, the members run on every minibatch, whose windows "
                      "are mixed in pairs (mixup, weights from Beta(a, a), `teacher_mixup`), instead of stored "
                      "soft targets of the subset's frames (function matching, Beyer et al. 2022). Its training "
                      "curve is on the mixed windows."]
        lines += ["", "Paper, section 6:", ""]
        lines += _table(["system", "train frame accuracy", "test frame accuracy"],
                        [[k, f"{a}%", f"{b}%"] for k, (a, b) in res["paper_section6"].items()])
    v = res["ensemble_variants"]
    lines += ["", "## Ensemble variants", "", "Frame accuracy of the members' arithmetic mean (the paper's, used for "
              "the soft targets) and geometric mean, and of the first k members:", ""]
    sizes = sorted(v[test]["size_curve"])
    lines += _table(["set", "arithmetic", "geometric", *(f"{k} member{'s' if k > 1 else ''}" for k in sizes)],
                    [[s, _f(v[s]["arithmetic"]), _f(v[s]["geometric"]), *(_f(v[s]["size_curve"].get(k)) for k in sizes)]
                     for s in (tune, test)])
    ts = v.get("teacher_switching")
    if ts:
        lines += ["", f"Teacher switching (Fukuda et al. 2017) at T={ts['temperature']:g}: each minibatch is distilled "
                  "from one member's soft targets, drawn at random, instead of from their average:", ""]
        lines += _table(["student", f"{tune} frame acc.", f"{test} frame acc.", f"{tune} WER", f"{test} WER", "epochs"],
                        [[k, _f(r.get(f"{tune}_frame_acc")), _f(r.get(f"{test}_frame_acc")), _f(r.get(f"{tune}_wer")),
                          _f(r.get(f"{test}_wer")), r.get("epochs")]
                         for k, r in (("switched teachers", ts["switched"]), ("averaged teachers", ts["averaged"])) if r])
    lines += ["", "## Seeds", "", "The members differ only in their seed; their spread is the noise level of a "
              "single comparison:", ""]
    lines += _table(["set", "members' frame acc.", "mean", "std", "range"],
                    [[s, ", ".join(f"{a:.2f}" for a in r["frame_acc"]), _f(r["mean"]), _f(r["std"]),
                      f"{r['min']:.2f}–{r['max']:.2f}"] for s, r in res["seeds"].items()])
    if res["soft_targets"]:
        lines += ["", "## Soft targets", "", "Stored: the ensemble's top k per frame, the rest of its mass spread evenly "
                  "over the other senones" + (f"; plus each member's own for teacher switching "
                                              f"({res['per_member_soft_targets']} dirs)" if res["per_member_soft_targets"]
                                              else "") + ".", ""]
        lines += _table(["dir", "T", "top-k", "mass in the top k", "KL(dense ‖ stored)", "size", "dense float32"],
                        [[name, f"{i['temperature']:g}", i["top_k"], f"{i['mean_topk_mass']:.4f}",
                          f"{i['kl_dense_vs_stored']:.4f}", f"{i['bytes_topk'] / 1e6:.0f} MB",
                          f"{i['bytes_dense_float32'] / 1e6:.0f} MB"] for name, i in res["soft_targets"].items() if i])
    if res["stage_seconds"]:
        total = sum(res["stage_seconds"].values())
        lines += ["", "## Time per stage", "", "Wall-clock of each stage's latest run (`exp/log/stage_times.tsv`):", ""]
        lines += _table(["stage", "minutes"], [[k, f"{t / 60:.1f}"] for k, t in res["stage_seconds"].items()]
                        + [["these stages", f"{total / 60:.1f}"]])
    if res.get("environment"):
        lines += environment_lines(res["environment"], {"model files": res.get("model_environments", {}),
                                                        "decodes": res.get("decode_environments", {})})
    lines += ["", "Plots: `dev_frame_accuracy.png` (per epoch), `wer.png` (test WER), `section6.png`, `ensemble_size.png`."]
    write_list(path, lines)


def _env_row(env: dict | None, ref: dict) -> list[str]:
    """asrkd commit, Python, packages (those that differ from `ref`'s), CPU, ISA, threads, device."""
    if not env:
        return ["not recorded"] + ["–"] * 6
    commit = env.get("asrkd_commit")
    commit = f"{commit[:12]}{' (modified)' if env.get('asrkd_dirty') else ''}" if commit else "not a git checkout"
    pk, ref_pk = env.get("packages", {}), ref.get("packages", {})
    differ = [f"{k} {v or 'absent'}" for k, v in pk.items() if v != ref_pk.get(k)]
    blas = env.get("numpy_blas") or {}
    amx = {True: "AMX", False: "no AMX"}.get(env.get("amx"))
    isa = ", ".join(filter(None, [env.get("cpu_capability") and f"torch {env['cpu_capability']}", amx,
                                  blas and f"numpy {blas.get('library')} {blas.get('architecture')}"]))
    return [commit, env.get("python", "–"), ", ".join(differ) or "same", env.get("cpu") or "–", isa or "–",
            env.get("threads", "–"), env.get("device", "–")]


def environment_lines(env: dict, made: dict[str, dict]) -> list[str]:
    """The Environment section: this report's environment, then per kind of output (model
    files, decodes: {dir: environment}) the environments, each with the dirs made in it."""
    rows = [["this report", *_env_row(env, env)[:2], "listed below", *_env_row(env, env)[3:]]]
    for kind, envs in made.items():
        groups = {}
        for d, e in envs.items():
            groups.setdefault(tuple(map(str, _env_row(e, env))), []).append(d)
        for key, dirs in groups.items():
            label = f"all {kind} ({len(dirs)})" if len(groups) == 1 else ", ".join(dirs)
            rows.append([label, *key])
    kernel, packages = env.get("kernel_env") or {}, env.get("packages", {})
    return ["", "## Environment", "", "What produced these numbers: the report's own environment, the one each "
            "model file was trained in and each decode ran in (`environment`, `model_environments`, "
            "`decode_environments` in results.json). Packages: those that differ from the report's; threads: "
            "torch's intra-op threads.", "",
            *_table(["made by", "asrkd commit", "Python", "packages", "CPU", "vector ISA", "threads", "device"], rows),
            "", "- Packages (this report): " + ", ".join(f"{k} {v or 'absent'}" for k, v in packages.items()),
            "- Kernel variables set: " + (", ".join(f"{k}={v}" for k, v in kernel.items()) or "none")]


def plot(res: dict, nnet_dir: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tune, test = res["sets"]

    def curve(ax, hist, key="dev_frame_accuracy", **kw):
        ax.plot([e["epoch"] for e in hist], [100 * e[key] for e in hist], **kw)

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, m in enumerate(res["members"]):
        curve(ax, _json(Path(m) / "log" / "train.json") or [], color="tab:blue", alpha=1.0 if i == 0 else 0.3,
              label="baseline (member 0)" if i == 0 else None)
    exp = NnetExpDir(nnet_dir)
    curve(ax, _json(exp.distilled / "log" / "train.json") or [], color="tab:red", label="distilled")
    curve(ax, _json(exp.student_mixup / "log" / "train.json") or [], color="tab:purple",
          label="distilled, mixed-up windows")
    ens = next(r for k, r in res["systems"].items() if k.startswith("ensemble"))
    ax.axhline(ens[f"{tune}_frame_acc"], color="tab:green", ls="--", label="ensemble")
    ax.set(xlabel="epoch", ylabel=f"{tune} frame accuracy (%)", title=f"{tune} frame accuracy per epoch")
    ax.legend()
    _save(fig, out / "dev_frame_accuracy.png")

    named = [(k, r[f"{test}_wer"]) for k, r in res["systems"].items() if r.get(f"{test}_wer") is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar([textwrap.fill(k, 20) for k, _ in named], [w for _, w in named], color="tab:gray")
    for i, (_, w) in enumerate(named):
        ax.text(i, w, f"{w:.2f}", ha="center", va="bottom")
    ax.set(ylabel=f"{test} WER (%)", title=f"WER on {test}")
    ax.tick_params(axis="x", labelsize=7)
    _save(fig, out / "wer.png")

    if res["section6"]:
        fig, ax = plt.subplots(figsize=(6, 6.5))
        for (name, r), color in zip(res["section6"].items(), ("tab:blue", "tab:orange", "tab:red", "tab:green")):
            curve(ax, r["history"], "train_frame_accuracy", color=color, ls=":",
                  label=f"{name}: train (in training mode)")
            curve(ax, r["history"], color=color, label=f"{name}: {tune}")
        ax.set(xlabel="epoch", ylabel="frame accuracy (%)", title="Section 6: subset with hard vs soft targets")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15))
        _save(fig, out / "section6.png")

    fig, ax = plt.subplots(figsize=(5, 4))
    for s in (tune, test):
        sc = res["ensemble_variants"][s]["size_curve"]
        ax.plot(sorted(sc), [sc[k] for k in sorted(sc)], marker="o", label=s)
    ax.set(xlabel="members averaged", ylabel="frame accuracy (%)", title="Ensemble size")
    ax.legend()
    _save(fig, out / "ensemble_size.png")


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)


def compare(gmm_dir: str | Path, nnet_dir: str | Path, out_dir: str | Path,
            sets: tuple[str, str] = ("dev", "test"), stage_times: str | Path | None = None) -> dict:
    """Write out_dir/results.{json,md} and the plots; returns the results."""
    out_dir = Path(out_dir)
    res = gather(gmm_dir, nnet_dir, sets, stage_times)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_dir / "results.json") as f:
        json.dump(res, f, indent=2)
    write_markdown(res, out_dir / "results.md")
    plot(res, Path(nnet_dir), out_dir)
    log.info("%s: results.md, results.json and plots", out_dir)
    return res


def senone_inventory(systems: dict[str, tuple], lang_dir: str | Path, out_dir: str | Path,
                     sets: tuple[str, str] = ("dev", "test")) -> dict:
    """Tree variants side by side: per system
    (name -> (GMM dir, alignment dir, DNN dir)) the senone inventory, and the GMM's and the
    DNN's frame accuracy at senone and phone level and WER. Writes out_dir/senones.{json,md}."""
    from asrkd.hmm.alignment import AlignmentDir
    from asrkd.lang import read_symbols

    phones = {v: k for k, v in read_symbols(Path(lang_dir) / "phones.txt").items()}
    silence = {phones[int(x)] for x in (Path(lang_dir) / "phones" / "silence.int").read_text().split()}
    res = {}
    for name, (gmm, ali, nnet) in systems.items():
        pdf_info = AlignmentDir(ali).tree_pdf_info
        if pdf_info is None:
            raise AsrkdError(f"{ali}/tree: missing; the senone inventory needs the tree the alignment used")
        per_phone = {}
        for phone, _ in pdf_info:
            per_phone[phones[phone]] = per_phone.get(phones[phone], 0) + 1
        speech = [n for p, n in per_phone.items() if p not in silence]
        res[name] = {"gmm_dir": str(gmm), "nnet_dir": str(nnet), "senones": sum(per_phone.values()),
                     "silence_senones": sum(n for p, n in per_phone.items() if p in silence),
                     "per_speech_phone": [sum(speech) / len(speech), min(speech), max(speech)],
                     "senones_per_phone": per_phone, "gmm": _scores(Path(gmm), sets), "dnn": _scores(Path(nnet), sets)}
    tune, test = sets
    lines = ["# Senone inventory", "", "Each tree's senones, and the frame accuracy (senone and phone level) and WER "
             "of its GMM and of a DNN baseline (seed 0, conf/nnet.yaml) trained on its alignment. Frame accuracy is "
             "against each system's own alignment.", ""]
    lines += _table(["system", "senones", "silence senones", "per speech phone (mean, min–max)",
                     *(f"{m} {s} {k}" for m in ("GMM", "DNN") for s, k in
                       ((tune, "senone acc."), (test, "senone acc."), (test, "phone acc."), (tune, "WER"), (test, "WER")))],
                    [[name, r["senones"], r["silence_senones"],
                      f"{r['per_speech_phone'][0]:.1f} ({r['per_speech_phone'][1]}–{r['per_speech_phone'][2]})",
                      *(_f(r[m].get(key)) for m in ("gmm", "dnn") for key in
                        (f"{tune}_frame_acc", f"{test}_frame_acc", f"{test}_phone_acc", f"{tune}_wer", f"{test}_wer"))]
                     for name, r in res.items()])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_dir / "senones.json") as f:
        json.dump(res, f, indent=2)
    write_list(out_dir / "senones.md", lines)
    return res

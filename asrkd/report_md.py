"""The comparison as people read it: `exp/compare/results.md` and the plots, from the
results `asrkd.report.gather` collects."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

from asrkd.nnet.expdir import NnetExpDir
from asrkd.utils import read_json, write_list

log = logging.getLogger(__name__)
SUBSET_MIXUP = "subset, soft targets from the ensemble run on mixed-up windows"
STUDENT_MIXUP = "distilled, members run on mixed-up windows"


def cell(x, fmt="{:.2f}") -> str:
    """A table cell: `x` formatted, or a dash where it is missing."""
    return "–" if x is None else fmt.format(x)


def md_table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table's lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def _lm(r: dict, s: str) -> str:
    lm = r.get(f"{s}_lmwt")
    return f"{lm[0]:g}, {lm[1]:g}" if lm else "–"


def _main_table(res: dict) -> list[str]:
    """The systems' table, what is missing, and the students' shares of the ensemble's gain."""
    rows, (tune, test) = res["systems"], res["sets"]
    lines = ["# Baseline, ensemble and distilled acoustic models", "",
             "Frame accuracy is the argmax senone against the GMM's forced alignment (phone level: the senone's "
             "phone); for the GMM that alignment is its own Viterbi path, which favours it. WER uses the LM "
             f"weight and insertion penalty chosen on {tune}. MFLOP/frame counts the "
             "forward pass (a GMM: 4 x dim per Gaussian); training time is wall-clock on the machine that ran "
             "the recipe; the decode RTF is per core and includes the acoustic model.", ""]
    table = []
    for name, r in rows.items():
        rng = r.get(f"{test}_frame_acc_range")
        table.append([name, r.get("arch", ""), cell(r.get(f"{tune}_frame_acc")),
                      cell(r.get(f"{test}_frame_acc")) + (f" ({rng[0]:.2f}–{rng[1]:.2f})" if rng else ""),
                      cell(r.get(f"{test}_phone_acc")), cell(r.get(f"{tune}_wer")), cell(r.get(f"{test}_wer")),
                      _lm(r, test), f"{r['params'] / 1e6:.2f} M", f"{r['mflops_per_frame']:.1f}",
                      cell(r.get(f"{test}_rtf"), "{:.3f}"), f"{r['train_seconds'] / 60:.1f} min"])
    lines += md_table(["system", "model", f"{tune} frame acc.", f"{test} frame acc.", f"{test} phone acc.",
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
    return lines


def _paper_and_sweep(res: dict) -> list[str]:
    """The paper's Table 1 and the temperature sweep."""
    lines = []
    tune, test = res["sets"]
    lines += ["", "## Paper, Table 1 (Hinton et al. 2015: 2000 h, 14,000 senones, 10 x 85M-weight DNNs)", ""]
    lines += md_table(["system", "test frame accuracy", "WER"],
                    [[k, f"{fa}%", f"{w}%"] for k, (fa, w) in res["paper_table1"].items()])
    if res["temperature_sweep"]:
        lines += ["", "## Temperature sweep", "",
                  f"Students distilled at each T (plus the hard targets' cross-entropy at the config's "
                  f"`hard_weight`); the one with the best {tune} frame accuracy is `distilled` (**bold**). The "
                  "hard-targets-only row is the "
                  "baseline. The chosen student's LM weight and penalty are tuned on "
                  f"{tune}; the other students are decoded at those.", ""]
        lines += md_table(["student", f"{tune} frame acc.", f"{test} frame acc.", f"{test} phone acc.", f"{tune} WER",
                         f"{test} WER", "epochs"],
                        [[f"**{k}**" if r["chosen"] else k, cell(r.get(f"{tune}_frame_acc")), cell(r.get(f"{test}_frame_acc")),
                          cell(r.get(f"{test}_phone_acc")), cell(r.get(f"{tune}_wer")), cell(r.get(f"{test}_wer")),
                          r.get("epochs", "–")] for k, r in res["temperature_sweep"].items()])
    return lines


def _section6(res: dict) -> list[str]:
    """Soft targets as a regulariser (paper section 6), where its models exist."""
    lines = []
    tune, test = res["sets"]
    if res["section6"]:
        lines += ["", "## Soft targets as a regulariser (paper section 6)", "",
                  "The same network trained on a seeded subset of the training utterances, with its hard targets "
                  "or with the full-data ensemble's soft targets (the chosen T); training accuracy is on the data "
                  "each model was trained on. Curves: `section6.png`.", ""]
        lines += md_table(["model", "training frames", "train frame acc.", f"{tune} frame acc.", f"{test} frame acc.",
                         "epochs (best)"],
                        [[k, cell(r["train_frames"], "{:,}"), cell(r["train_frame_acc"]), cell(r.get(f"{tune}_frame_acc")),
                          cell(r.get(f"{test}_frame_acc")), f"{r['epochs']} ({r['best_epoch']})"]
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
        lines += md_table(["system", "train frame accuracy", "test frame accuracy"],
                        [[k, f"{a}%", f"{b}%"] for k, (a, b) in res["paper_section6"].items()])
    return lines


def _ensemble_variants(res: dict) -> list[str]:
    """The arithmetic and geometric means, the size curve and teacher switching."""
    lines = []
    tune, test = res["sets"]
    v = res["ensemble_variants"]
    lines += ["", "## Ensemble variants", "", "Frame accuracy of the members' arithmetic mean (the paper's, used for "
              "the soft targets) and geometric mean, and of the first k members:", ""]
    sizes = sorted(v[test]["size_curve"])
    lines += md_table(["set", "arithmetic", "geometric", *(f"{k} member{'s' if k > 1 else ''}" for k in sizes)],
                    [[s, cell(v[s]["arithmetic"]), cell(v[s]["geometric"]), *(cell(v[s]["size_curve"].get(k)) for k in sizes)]
                     for s in (tune, test)])
    if v[test].get("by_arch"):
        lines += ["", "Members of several architectures: the ensemble of each architecture's members alone "
                  "(arithmetic mean):", ""]
        archs = list(v[test]["by_arch"])
        lines += md_table(["set", *(f"{a} ({v[test]['by_arch'][a]['members']})" for a in archs), "all"],
                          [[s, *(cell(v[s]["by_arch"][a]["frame_acc"]) for a in archs), cell(v[s]["arithmetic"])]
                           for s in (tune, test)])
    ts = v.get("teacher_switching")
    if ts:
        lines += ["", f"Teacher switching (Fukuda et al. 2017) at T={ts['temperature']:g}: each minibatch is distilled "
                  "from one member's soft targets, drawn at random, instead of from their average:", ""]
        lines += md_table(["student", f"{tune} frame acc.", f"{test} frame acc.", f"{tune} WER", f"{test} WER", "epochs"],
                        [[k, cell(r.get(f"{tune}_frame_acc")), cell(r.get(f"{test}_frame_acc")), cell(r.get(f"{tune}_wer")),
                          cell(r.get(f"{test}_wer")), r.get("epochs")]
                         for k, r in (("switched teachers", ts["switched"]), ("averaged teachers", ts["averaged"])) if r])
    lines += ["", "## Seeds", "", "The members of member 0's architecture differ only in their seed; their "
              "spread is the noise level of a single comparison:", ""]
    lines += md_table(["set", "members' frame acc.", "mean", "std", "range"],
                    [[s, ", ".join(f"{a:.2f}" for a in r["frame_acc"]), cell(r["mean"]), cell(r["std"]),
                      f"{r['min']:.2f}–{r['max']:.2f}"] for s, r in res["seeds"].items()])
    return lines


def _seeds_and_more(res: dict) -> list[str]:
    """The members' seed spread, the soft targets, time per stage and the environment."""
    lines = []
    tune, test = res["sets"]
    if res["soft_targets"]:
        lines += ["", "## Soft targets", "", "Stored: the ensemble's top k per frame, the rest of its mass spread evenly "
                  "over the other senones" + (f"; plus each member's own for teacher switching "
                                              f"({res['per_member_soft_targets']} dirs)" if res["per_member_soft_targets"]
                                              else "") + ".", ""]
        lines += md_table(["dir", "T", "top-k", "mass in the top k", "KL(dense ‖ stored)", "size", "dense float32"],
                        [[name, f"{i['temperature']:g}", i["top_k"], f"{i['mean_topk_mass']:.4f}",
                          f"{i['kl_dense_vs_stored']:.4f}", f"{i['bytes_topk'] / 1e6:.0f} MB",
                          f"{i['bytes_dense_float32'] / 1e6:.0f} MB"] for name, i in res["soft_targets"].items() if i])
    if res["stage_seconds"]:
        total = sum(res["stage_seconds"].values())
        lines += ["", "## Time per stage", "", "Wall-clock of each stage's latest run (`exp/log/stage_times.tsv`):", ""]
        lines += md_table(["stage", "minutes"], [[k, f"{t / 60:.1f}"] for k, t in res["stage_seconds"].items()]
                        + [["these stages", f"{total / 60:.1f}"]])
    if res.get("environment"):
        lines += environment_lines(res["environment"], {"model files": res.get("model_environments", {}),
                                                        "decodes": res.get("decode_environments", {})})
    return lines


def _ci(r: dict | None) -> str:
    """`value [lo, hi]` of an interval record, a dash where there is none."""
    return "–" if not r else f"{r['value']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]"


def _significance(res: dict) -> list[str]:
    """Bootstrap intervals and age groups per system, and the paired comparisons, on the test set."""
    sig, test = res.get("significance"), res["sets"][1]
    if not sig or not sig["intervals"]:
        return []
    metrics = (("wer", "WER"), ("frame_acc", "frame acc."))
    groups = sorted({g for r in sig["groups"].values() for m in r.get(test, {}).values() for g in m})
    rows = []
    for name, per_set in sig["intervals"].items():
        r, g = per_set.get(test, {}), sig["groups"].get(name, {}).get(test, {})
        rows.append([name, *(_ci((r.get(m) or {}).get("speaker") or (r.get(m) or {}).get("utterance")) for m, _ in metrics),
                     *(cell(g.get(m, {}).get(grp)) for m, _ in metrics for grp in groups)])
    unit = next((iv.get("speaker") or iv["utterance"] for r in sig["intervals"].values() for iv in
                 r.get(test, {}).values()), None)
    lines = ["", "## Significance", "",
             f"{sig['level']:g}% percentile bootstrap intervals over the {test} set's {unit['blocks']} "
             f"{unit['unit']}s ({sig['resamples']} resamples), and the value per age group. The frame accuracy of "
             "the GMM is against its own alignment.", ""] if unit else []
    lines += md_table(["system", *(f"{test} {k} [{sig['level']:g}% CI]" for _, k in metrics),
                       *(f"{k}, {grp}" for _, k in metrics for grp in groups)], rows)
    paired = [p for p in sig["paired"] if p["set"] == test]
    if paired:
        lines += ["", f"Paired bootstrap (Bisani and Ney 2004) on the same resamples: the difference b − a, its "
                  "interval, and the share of resamples in which b is better. **Not significant** unless b is better, "
                  f"or worse, in at least {100 - (100 - sig['level']) / 2:g}% of them (then the "
                  f"{sig['level']:g}% interval excludes 0).", ""]
        lines += md_table(["comparison", "metric", "a", "b", f"b − a [{sig['level']:g}% CI]", "P(b better)",
                           "P(b better), over utterances", ""],
                          [[p["comparison"], dict(metrics)[p["metric"]], f"{p['value_a']:.2f}", f"{p['value_b']:.2f}",
                            f"{p['delta']:+.2f} [{p['ci'][0]:+.2f}, {p['ci'][1]:+.2f}]", f"{p['p_improvement']:.3f}",
                            f"{p['p_improvement_utterance']:.3f}",
                            "significant" if p["significant"] else "**not significant**"] for p in paired])
    return lines


def write_markdown(res: dict, path: Path) -> None:
    """`exp/compare/results.md` from `gather`'s results."""
    lines = [*_main_table(res), *_significance(res), *_paper_and_sweep(res), *_section6(res),
             *_ensemble_variants(res), *_seeds_and_more(res)]
    plots = ["`dev_frame_accuracy.png` (per epoch)", "`wer.png` (test WER)",
             *(["`section6.png`"] * bool(res["section6"])), "`ensemble_size.png`"]
    lines += ["", f"Plots: {', '.join(plots)}."]
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
            *md_table(["made by", "asrkd commit", "Python", "packages", "CPU", "vector ISA", "threads", "device"], rows),
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
        curve(ax, read_json(Path(m) / "log" / "train.json") or [], color="tab:blue", alpha=1.0 if i == 0 else 0.3,
              label="baseline (member 0)" if i == 0 else None)
    exp = NnetExpDir(nnet_dir)
    curve(ax, read_json(exp.distilled / "log" / "train.json") or [], color="tab:red", label="distilled")
    curve(ax, read_json(exp.student_mixup / "log" / "train.json") or [], color="tab:purple",
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



"""Seed spread of the recipe's headline numbers (`local/seed_spread.sh`): per system and
number the values over seeds, their mean, standard deviation (ddof=1) and n, and whether
the differences the report states exceed that spread.

Systems: the baseline (the ensemble's members, seeds 0..n-1), the ensemble (its
leave-one-out ensembles; its estimate is the recipe's full ensemble with the jackknife
standard error), the chosen student (`distilled`), the student from mixed-up teachers and
section 6's subset models (the recipe's run, seed 0, plus `<spread_dir>/<name>_seed<s>`).

Rule: a difference exceeds the seed spread when the Welch t-interval (95% by default,
Welch-Satterthwaite degrees of freedom) of the difference of the two systems' estimates
excludes 0. A seeded system's estimate is its seed mean with standard error std/sqrt(n) and
n-1 degrees of freedom. The two systems are treated as independent, although the ensemble is
made of the baseline's seeds and teaches the students.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from asrkd.nnet.expdir import NnetExpDir, decode_dir, frame_accuracy_file
from asrkd.utils import AsrkdError, atomic_file, read_json

RULE = ("Welch t-interval: a difference exceeds the seed spread when the {level:g}% t-interval of the "
        "difference of the two systems' estimates excludes 0 (Welch-Satterthwaite degrees of freedom). "
        "Estimates: a seeded system's seed mean (standard error std/sqrt(n), n-1 degrees of freedom); the "
        "ensemble's full value (standard error: the jackknife over its leave-one-out ensembles, n-1 degrees "
        "of freedom). The systems are treated as independent.")
# (name, system, minus this system): the differences the report states
COMPARISONS = [("distilled vs baseline", "distilled", "baseline"), ("ensemble vs baseline", "ensemble", "baseline"),
               ("distilled vs ensemble", "distilled", "ensemble"),
               ("mixup student vs ensemble", "student_mixup", "ensemble"),
               ("mixup student vs distilled", "student_mixup", "distilled"),
               ("subset soft vs hard", "subset_soft", "subset_hard"),
               ("subset mixup vs soft", "subset_mixup", "subset_soft")]


def summarize(values: list[float]) -> dict:
    """Values over seeds: mean, std (ddof=1; None for one value), n; the estimate is the mean,
    its standard error std/sqrt(n) with n-1 degrees of freedom."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return {"values": list(values), "mean": mean, "std": std, "n": n, "estimate": mean,
            "se": std / math.sqrt(n) if std is not None else None, "df": n - 1}


def jackknife_std(values: list[float]) -> float:
    """Jackknife standard error of a statistic from its leave-one-out values:
    sqrt((n-1)/n * sum (x_i - mean)^2)."""
    n = len(values)
    if n < 2:
        raise ValueError("the jackknife needs at least 2 leave-one-out values")
    mean = sum(values) / n
    return math.sqrt((n - 1) / n * sum((v - mean) ** 2 for v in values))


def summarize_jackknife(loo_values: list[float], full: float) -> dict:
    """An ensemble's number: its leave-one-out values summarized, and as the estimate the full
    ensemble's value with the jackknife standard error."""
    r = summarize(loo_values)
    se = jackknife_std(loo_values) if len(loo_values) > 1 else None
    return r | {"full": full, "jackknife_std": se, "estimate": full, "se": se}


def t_quantile(p: float, df: float) -> float:
    """Quantile p of Student's t with df degrees of freedom (the normal's for df = inf)."""
    from scipy.stats import norm, t

    return float(norm.ppf(p) if math.isinf(df) else t.ppf(p, df))


def welch_interval(a: dict, b: dict, level: float = 0.95) -> dict:
    """The difference a - b of two summaries' estimates, its standard error, Welch-Satterthwaite
    degrees of freedom, `level` t-interval, and whether the interval excludes 0 (None when
    either side has no standard error, e.g. a single seed)."""
    d = a["estimate"] - b["estimate"]
    if a["se"] is None or b["se"] is None:
        return {"difference": d, "se": None, "df": None, "interval": None, "exceeds_spread": None}
    var = a["se"] ** 2 + b["se"] ** 2
    terms = [s["se"] ** 4 / s["df"] for s in (a, b) if s["se"] > 0]
    df = var ** 2 / sum(terms) if terms else math.inf
    half = t_quantile(0.5 + level / 2, df) * math.sqrt(var)
    return {"difference": d, "se": math.sqrt(var), "df": None if math.isinf(df) else df,
            "interval": [d - half, d + half], "exceeds_spread": bool(d - half > 0 or d + half < 0)}



def run_numbers(d: Path, sets) -> dict:
    """A model dir's headline numbers per set: frame accuracy (%) from frame_accuracy_<set>.json,
    WER (%) from decode_<set>/decode_info.json; absent ones left out."""
    fa = {f"{s}_frame_acc": read_json(frame_accuracy_file(d, s)) for s in sets}
    info = {f"{s}_wer": read_json(decode_dir(d, s) / "decode_info.json") or {} for s in sets}
    return {**{k: 100 * r["frame_accuracy"] for k, r in fa.items() if r},
            **{k: r["wer"] for k, r in info.items() if r.get("wer") is not None}}


def collect(runs: dict[str, dict]) -> dict[str, dict]:
    """{run: {metric: value}} -> {metric: {"runs": [...], "values": [...]}}, runs in order."""
    metrics = {}
    for run, numbers in runs.items():
        for k, v in numbers.items():
            m = metrics.setdefault(k, {"runs": [], "values": []})
            m["runs"].append(run)
            m["values"].append(v)
    return metrics


def seeded_runs(recipe_dir: Path, spread_dir: Path, sets) -> dict[str, dict]:
    """The recipe's run (seed 0) and spread_dir/<its name>_seed<s>, in seed order (the seed a
    model's `final.pt` records)."""
    from asrkd.nnet.model import model_info

    extra = [d for d in spread_dir.glob(f"{recipe_dir.name}_seed*")
             if re.fullmatch(r".*_seed\d+", d.name) and (d / "final.pt").is_file()]
    extra.sort(key=lambda d: model_info(d).get("seed", 0))
    return {str(d): run_numbers(d, sets) for d in [recipe_dir, *extra] if d.is_dir()}


def summarize_runs(metrics: dict[str, dict], recipe_run: str | None) -> dict[str, dict]:
    """Each metric's runs summarized, with the recipe's own run's value as `recipe`."""
    return {k: {"runs": m["runs"], **summarize(m["values"]),
                "recipe": dict(zip(m["runs"], m["values"])).get(recipe_run)} for k, m in metrics.items()}


def ensemble_metrics(full: dict[str, float], loo: dict[str, dict]) -> dict[str, dict]:
    """The ensemble's numbers: the recipe's full ensemble and its leave-one-out ensembles."""
    out = {}
    for k, v in full.items():
        m = loo.get(k, {"runs": [], "values": []})
        if m["values"]:
            out[k] = {"runs": m["runs"], **summarize_jackknife(m["values"], v), "recipe": v}
        else:
            out[k] = {"runs": [], "values": [], "mean": None, "std": None, "n": 0, "full": v, "jackknife_std": None,
                      "estimate": v, "se": None, "df": None, "recipe": v}
    return out


def baseline_runs(nnet_dir: Path, spread_dir: Path, sets) -> dict[str, dict]:
    """Each member's frame accuracy from the recipe's ensemble/frame_accuracy_<set>.json
    (--per-member) and WER from its decodes (spread_dir/member_<k>, else the recipe's)."""
    exp = NnetExpDir(nnet_dir)
    members = exp.members()
    if not members:
        raise AsrkdError(f"{nnet_dir}: no member_<k> dirs (run the recipe's stage 10)")
    runs = {}
    for s in sets:
        fa = read_json(frame_accuracy_file(exp.ensemble, s))
        if fa is None or len(fa.get("members", [])) != len(members):
            raise AsrkdError(f"{frame_accuracy_file(exp.ensemble, s)}: missing or without all "
                             f"{len(members)} members (run the recipe's stage 15)")
        if len({r.get("arch") for r in fa["members"]}) > 1:
            raise AsrkdError(f"{nnet_dir}: members of several architectures (member_archs) are not seeds of "
                             "one baseline; the seed spread needs members that differ only in seed")
        for m, r in zip(members, fa["members"]):
            runs.setdefault(str(m), {})[f"{s}_frame_acc"] = 100 * r["frame_accuracy"]
    for m in members:
        dec = spread_dir / m.name if (spread_dir / m.name).is_dir() else m
        runs[str(m)] |= {k: v for k, v in run_numbers(dec, sets).items() if k.endswith("_wer")}
    return runs


def gather_spread(nnet_dir: str | Path, spread_dir: str | Path, sets: tuple[str, str] = ("dev", "test")) -> dict:
    """{system: {"description", "metrics": {metric: summary}}} for every system with runs."""
    nnet_dir, spread_dir, exp = Path(nnet_dir), Path(spread_dir), NnetExpDir(nnet_dir)
    base = baseline_runs(nnet_dir, spread_dir, sets)
    systems = {"baseline": {"description": "the ensemble's members (seed k: member_k)",
                            "metrics": summarize_runs(collect(base), str(exp.members()[0]))}}
    loo = sorted(d for d in spread_dir.glob("ensemble_without_*") if re.fullmatch(r"ensemble_without_\d+", d.name))
    systems["ensemble"] = {"description": f"the recipe's ensemble of {len(base)}; values: its leave-one-out ensembles",
                           "metrics": ensemble_metrics(run_numbers(exp.ensemble, sets),
                                                       collect({str(d): run_numbers(d, sets) for d in loo}))}
    chosen = exp.chosen_student()
    named = [("distilled", nnet_dir / chosen.name, "the chosen student")] if chosen is not None else []
    named += [("student_mixup", exp.student_mixup, "the student from the members run on mixed-up windows"),
              *((f"subset_{k}", exp.section6(k), f"section 6: the subset model, {k} targets")
                for k in ("hard", "soft", "mixup"))]
    for name, recipe_dir, what in named:
        runs = seeded_runs(recipe_dir, spread_dir, sets)
        if runs:
            systems[name] = {"description": f"{what}: the recipe's {recipe_dir} (seed 0) and {spread_dir}/"
                             f"{recipe_dir.name}_seed<s>", "metrics": summarize_runs(collect(runs), str(recipe_dir))}
    return systems


def differences(systems: dict, level: float = 0.95) -> list[dict]:
    """The stated comparisons, per metric both systems have: the recipe runs' difference and
    the Welch interval of the estimates' difference."""
    out = []
    for name, a, b in COMPARISONS:
        if a not in systems or b not in systems:
            continue
        for metric, sa in systems[a]["metrics"].items():
            sb = systems[b]["metrics"].get(metric)
            if sb is None:
                continue
            r = {"comparison": name, "metric": metric, "recipe_difference": None if None in (sa["recipe"], sb["recipe"])
                 else sa["recipe"] - sb["recipe"], **welch_interval(sa, sb, level)}
            if r["exceeds_spread"] is None:
                single = [x for x, s in ((a, sa), (b, sb)) if s["se"] is None]
                r["note"] = f"{' and '.join(single)} {'has' if len(single) == 1 else 'have'} a single run (no standard error)"
            out.append(r)
    return out


def seed_spread(nnet_dir: str | Path, spread_dir: str | Path, out_json: str | Path | None = None,
                sets: tuple[str, str] = ("dev", "test"), level: float = 0.95) -> dict:
    """Gather the systems' spread and the differences; write out_json (default spread_dir/spread.json)."""
    if not 0 < level < 1:
        raise AsrkdError(f"--level must lie in (0, 1), got {level}")
    systems = gather_spread(nnet_dir, spread_dir, sets)
    res = {"sets": list(sets), "level": level, "rule": RULE.format(level=100 * level), "systems": systems,
           "differences": differences(systems, level)}
    with atomic_file(out_json or Path(spread_dir) / "spread.json") as f:
        json.dump(res, f, indent=2)
    return res


def _pm(s: dict) -> str:
    if s["n"] == 0 or s["std"] is None:
        return f"{s['estimate']:.2f} (n={s['n'] or 1})"
    return f"{s['estimate']:.2f} ± {s['se']:.2f} (mean {s['mean']:.2f}, std {s['std']:.2f}, n={s['n']})"


def format_spread(res: dict) -> list[str]:
    """Plain-text lines: each system's estimate ± standard error, then each difference."""
    lines = ["system / number: estimate ± standard error (seed mean, std ddof=1, n)"]
    for name, system in res["systems"].items():
        lines += [f"{name:14s} {k:22s} {_pm(s)}" for k, s in system["metrics"].items()]
    lines += ["", f"differences ({100 * res['level']:g}% Welch t-interval in brackets, the recipe runs' difference "
              "in parentheses)"]
    for d in res["differences"]:
        verdict = {True: "exceeds the spread", False: "within the spread", None: d.get("note", "")}[d["exceeds_spread"]]
        ci = f" [{d['interval'][0]:+.2f}, {d['interval'][1]:+.2f}]" if d["interval"] else ""
        rd = f" ({d['recipe_difference']:+.2f})" if d["recipe_difference"] is not None else ""
        lines.append(f"{d['comparison']:28s} {d['metric']:22s} {d['difference']:+.2f}{rd}{ci}: {verdict}")
    return lines

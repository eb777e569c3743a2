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
from collections import Counter
from pathlib import Path

from asrkd.checkpoint import read_environment
from asrkd.config import load_config
from asrkd.data import read_table
from asrkd.environment import environment
from asrkd.nnet.config import NnetConfig
from asrkd.nnet.expdir import NnetExpDir, decode_dir, frame_accuracy_file
from asrkd.report_md import STUDENT_MIXUP, SUBSET_MIXUP, cell, md_table, plot, write_markdown
from asrkd.significance import ADULT_AGE, age_groups, per_utt_frames, read_per_utt_errors, significance
from asrkd.utils import AsrkdError, atomic_file, read_json, write_list

log = logging.getLogger(__name__)

# ../shared/PAPER.md, Table 1 (2000 h voice search, 14,000 senones, 8 x 2560 DNNs, 10 members)
PAPER = {"baseline": (58.9, 10.9), "ensemble": (61.1, 10.7), "distilled": (60.8, 10.7)}
# section 6: (train, test) frame accuracy
PAPER_SECTION6 = {"100% of train, hard targets": (63.4, 58.9), "3%, hard targets": (67.3, 44.5),
                  "3%, soft targets": (65.4, 57.0)}



def _scores(d: Path, sets, fa: dict | None = None) -> dict:
    """A system's frame accuracy (senone and phone level) and decoding results per set; `fa`
    gives the frame-accuracy records instead of d/frame_accuracy_<set>.json."""
    row = {}
    for s in sets:
        r = fa[s] if fa else read_json(frame_accuracy_file(d, s))
        info = read_json(decode_dir(d, s) / "decode_info.json") or {}
        row |= {f"{s}_frame_acc": 100 * r["frame_accuracy"] if r else None,
                f"{s}_phone_acc": 100 * r["phone_frame_accuracy"] if r and "phone_frame_accuracy" in r else None,
                f"{s}_wer": info.get("wer"), f"{s}_rtf": info.get("rtf_per_core"),
                f"{s}_lmwt": (info["best_lmwt"], info["best_wip"]) if info else None,
                f"{s}_tuned_on": info.get("tuned_on")}
    return row


def _counts(d: Path, sets, fa: dict) -> dict:
    """A system's per-utterance counts per set, for the bootstrap: {set: {"wer": {utt: (errors,
    words)}, "frame_acc": {utt: (correct, frames)}}}, None where not recorded."""
    return {s: {"wer": read_per_utt_errors(decode_dir(d, s)), "frame_acc": per_utt_frames(fa[s])} for s in sets}


def _system(d: Path, sets, fa: dict | None = None) -> tuple[dict, dict]:
    """A system's `_scores` and `_counts`, its frame-accuracy records read once (or given as `fa`)."""
    fa = fa or {s: read_json(frame_accuracy_file(d, s)) for s in sets}
    return _scores(d, sets, fa), _counts(d, sets, fa)


def _nnet_info(model_dir: Path) -> dict:
    from asrkd.nnet.model import load_nnet

    m = load_nnet(model_dir)
    hist = read_json(model_dir / "log" / "train.json") or []
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
    hist = read_json(gmm_dir / "log" / "train.json") or []
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
    return {_name(p.parent, gmm_dir, nnet_dir): (read_json(p) or {}).get("environment") for p in infos}


def _name(d: Path, gmm_dir: Path, nnet_dir: Path) -> str:
    """A dir named from the GMM dir's or the neural dir's parent (tri, tri/decode_test, nnet/member_0)."""
    top = gmm_dir if d.is_relative_to(gmm_dir) else nnet_dir
    return str(d.relative_to(top.parent))


def _ensemble_frame_accuracy(exp: NnetExpDir, members: list[Path], sets) -> dict:
    """The ensemble's frame-accuracy records per set, measured with exactly these members."""
    ens_fa = {s: read_json(frame_accuracy_file(exp.ensemble, s)) for s in sets}
    for s in sets:
        if ens_fa[s] is None:
            raise AsrkdError(f"{frame_accuracy_file(exp.ensemble, s)}: missing (run frame-accuracy first)")
        measured = [Path(m["model"]).name for m in ens_fa[s].get("members", [])]
        if measured != [m.name for m in members]:
            raise AsrkdError(f"{frame_accuracy_file(exp.ensemble, s)}: measured with members {measured}, but "
                             f"{exp.root} has finished {[m.name for m in members]}; "
                             "train the missing members or redo the ensemble's frame accuracy (--force)")
    return ens_fa


def _systems(gmm_dir: Path, exp: NnetExpDir, members: list[Path], ens_fa: dict, sets) -> tuple[dict, list, dict]:
    """Table 1's rows (GMM, baseline, mean of members, ensemble, the students that exist),
    what is missing, and the per-utterance counts of each row that is one system."""
    gmm, counts = f"{gmm_dir.name} GMM", {}  # the GMM whose alignments the networks learned
    scores, counts[gmm] = _system(gmm_dir, sets)
    rows = {gmm: {**_gmm_info(gmm_dir), **scores}}
    infos = [_nnet_info(m) for m in members]
    base_fa = {s: ens_fa[s]["members"][0] for s in sets}
    scores, counts["baseline (member 0)"] = _system(members[0], sets, base_fa)
    rows["baseline (member 0)"] = {**infos[0], **scores}
    kinds = " + ".join(f"{n} x {a}" for a, n in Counter(i["arch"] for i in infos).items())
    rows["mean of members"] = {**infos[0], **{k: sum(i[k] for i in infos) / len(members)  # members of several sizes
                                              for k in ("params", "mflops_per_frame", "train_seconds")},
                               **({"arch": f"mean of {kinds}"} if len({i['arch'] for i in infos}) > 1 else {}),
                               **{f"{s}_frame_acc": 100 * ens_fa[s]["member_mean"] for s in sets},
                               **{f"{s}_frame_acc_range": [100 * ens_fa[s]["member_min"], 100 * ens_fa[s]["member_max"]]
                                  for s in sets}}
    ensemble = f"ensemble of {len(members)}"
    scores, counts[ensemble] = _system(exp.ensemble, sets, ens_fa)
    rows[ensemble] = {
        "params": sum(i["params"] for i in infos), "arch": kinds,
        "mflops_per_frame": sum(i["mflops_per_frame"] for i in infos),
        "train_seconds": sum(i["train_seconds"] for i in infos), **scores}
    chosen, missing = exp.chosen_student(), []
    if chosen is not None and not (chosen / "final.pt").is_file():
        raise AsrkdError(f"{exp.distilled} -> {chosen.name}: no final.pt there; "
                         "rerun select-model or train that student")
    students = [(f"distilled (T={exp.temperature(chosen):g})", chosen)] if chosen else []
    if chosen is None:
        missing.append(f"distilled student ({exp.distilled} missing: run select-model over the students)")
    if ((mixed := exp.student_mixup) / "final.pt").is_file():
        students.append((f"{STUDENT_MIXUP} (T={exp.temperature(mixed):g})", mixed))
    for name, d in students:
        scores, counts[name] = _system(d, sets)
        rows[name] = {**_nnet_info(d), **scores}
    return rows, missing, counts


def _student_keeps(rows: dict, ensemble: str, sets) -> dict:
    """Per student: the share of the ensemble's gain over the baseline it keeps, only where
    the ensemble gained."""
    base, ens, kept = rows["baseline (member 0)"], rows[ensemble], {}
    for name, student in rows.items():
        if name.startswith("distilled"):
            kept[name] = {key: (student[key] - base[key]) / (ens[key] - base[key])
                          for s in sets for key, sign in ((f"{s}_frame_acc", 1), (f"{s}_wer", -1))
                          if None not in (base[key], ens[key], student[key]) and sign * (ens[key] - base[key]) > 0}
    return kept


def _section6(exp: NnetExpDir, baseline: Path, base: dict, sets) -> tuple[dict, dict, dict]:
    """Paper section 6's models (with the full baseline), the share of the test gap each
    soft-target model recovers, and the subset models' per-utterance counts; empty where no
    subset model was trained."""
    section6, counts = {}, {}
    for name, d in (("100% of train, hard targets (member 0)", baseline),
                    ("subset, hard targets", exp.section6("hard")), ("subset, soft targets", exp.section6("soft")),
                    (SUBSET_MIXUP, exp.section6("mixup"))):
        if (d / "final.pt").is_file():
            tr = read_json(frame_accuracy_file(d, "train"))
            row = base
            if d != baseline:
                scores, counts[name] = _system(d, sets)
                row = {**_nnet_info(d), **scores}
            section6[name] = {**row, "train_frames": tr and tr["frames"],
                              "train_frame_acc": tr and 100 * tr["frame_accuracy"],
                              "history": read_json(d / "log" / "train.json") or []}
    if len(section6) == 1:  # the baseline alone
        return {}, {}, {}
    test = sets[1]
    hard, full = (section6.get(k, {}).get(f"{test}_frame_acc") for k in
                  ("subset, hard targets", "100% of train, hard targets (member 0)"))
    recovered = {}  # share of the test gap between the subset's hard model and the full baseline
    for k in ("subset, soft targets", SUBSET_MIXUP):
        if None not in (hard, full, acc := section6.get(k, {}).get(f"{test}_frame_acc")) and full != hard:
            recovered[k] = (acc - hard) / (full - hard)
    return section6, recovered, counts


def _variants(exp: NnetExpDir, ens_fa: dict, sweep: dict, sets) -> dict:
    """The geometric mean, the ensemble-size curve and teacher switching."""
    variants = {s: {"arithmetic": 100 * ens_fa[s]["frame_accuracy"],
                    "geometric": 100 * ens_fa[s]["geometric"]["frame_accuracy"] if "geometric" in ens_fa[s] else None,
                    "size_curve": {int(k): 100 * v for k, v in ens_fa[s].get("size_curve", {}).items()},
                    "by_arch": {a: {"members": r["members"], "frame_acc": 100 * r["frame_accuracy"]}
                                for a, r in ens_fa[s].get("by_arch", {}).items()}} for s in sets}
    switched, own = exp.switched, exp.soft_target_dirs(members=True)
    if (switched / "final.pt").is_file():
        t = exp.soft_temperature(own[0]) if own else None
        variants["teacher_switching"] = {  # against the sweep's student on the averaged targets at that T
            "temperature": t, "switched": {**_nnet_info(switched), **_scores(switched, sets)},
            "averaged": sweep.get(f"T={t:g}") if t else None}
    return variants


def _seeds(ens_fa: dict, sets) -> dict:
    """The frame accuracies per set of the members of member 0's architecture (they differ only
    in seed): their mean, std (ddof 1) and range."""
    seeds = {}
    for s in sets:
        arch = ens_fa[s]["members"][0].get("arch")
        accs = [100 * m["frame_accuracy"] for m in ens_fa[s]["members"] if m.get("arch") == arch]
        mean = sum(accs) / len(accs)
        seeds[s] = {"frame_acc": accs, "mean": mean, "min": min(accs), "max": max(accs),
                    "std": (sum((a - mean) ** 2 for a in accs) / max(len(accs) - 1, 1)) ** 0.5}
    return seeds


def _pairs(names) -> list[tuple[str, str, str, tuple]]:
    """The comparisons the story rests on, (label, a, b, metrics) for b against a, among these
    systems."""
    def named(prefix):
        return next((n for n in names if n.startswith(prefix)), None)

    gmm = next((n for n in names if n.endswith(" GMM")), None)
    base, ens, dist, mix = "baseline (member 0)", named("ensemble of "), named("distilled (T="), \
        named(f"{STUDENT_MIXUP} (T=")
    hard, soft, smix = "subset, hard targets", "subset, soft targets", SUBSET_MIXUP
    both = ("wer", "frame_acc")  # not the GMM's frame accuracy: it is against its own alignment
    pairs = [("baseline vs GMM", gmm, base, ("wer",)), ("ensemble vs baseline", base, ens, both),
             ("distilled vs baseline", base, dist, both), ("distilled vs ensemble", ens, dist, both),
             ("mixup student vs distilled", dist, mix, both), ("mixup student vs ensemble", ens, mix, both),
             ("subset soft vs subset hard", hard, soft, both), ("subset mixup vs subset soft", soft, smix, both)]
    return [p for p in pairs if p[1] in names and p[2] in names]


def _speakers(data_root: Path | None, sets, adult_age: int) -> tuple[dict, dict]:
    """Per set, utt2spk and the utterances' age groups from `<data_root>/<set>/{utt2spk,spk2age}`
    (None where the data dir or its spk2age is missing)."""
    utt2spk, groups = {}, {}
    for s in sets:
        d = data_root / s if data_root else None
        utt2spk[s] = read_table(d / "utt2spk") if d and (d / "utt2spk").is_file() else None
        groups[s] = age_groups(read_table(d / "spk2age"), utt2spk[s], adult_age) \
            if utt2spk[s] and (d / "spk2age").is_file() else None
    return utt2spk, groups


def gather(gmm_dir: str | Path, nnet_dir: str | Path, sets: tuple[str, str] = ("dev", "test"),
           stage_times: str | Path | None = None, data_root: str | Path | None = None,
           adult_age: int = ADULT_AGE) -> dict:
    """Every system's numbers, the share of the ensemble's gain the student keeps, each
    experiment that was run (temperature sweep, section 6, ensemble variants, seeds), and the
    bootstrap intervals, paired comparisons and age groups (speakers from data_root/<set>)."""
    gmm_dir, nnet_dir, exp = Path(gmm_dir), Path(nnet_dir), NnetExpDir(nnet_dir)
    members = exp.members()
    if not members:
        raise AsrkdError(f"{nnet_dir}: no finished member_<k> dirs (run train-ensemble first)")
    ens_fa = _ensemble_frame_accuracy(exp, members, sets)
    rows, missing, counts = _systems(gmm_dir, exp, members, ens_fa, sets)
    base, chosen = rows["baseline (member 0)"], exp.chosen_student()
    sweep = {f"T={exp.temperature(d):g}": {**_nnet_info(d), **_scores(d, sets), "chosen": d.resolve() == chosen}
             for d in exp.students()}
    if sweep:
        sweep = {"hard targets only (member 0)": {**base, "chosen": False}, **sweep}
    section6, recovered, counts6 = _section6(exp, members[0], base, sets)
    kept = _student_keeps(rows, f"ensemble of {len(members)}", sets)
    utt2spk, groups = _speakers(Path(data_root) if data_root else None, sets, adult_age)
    counts |= counts6
    return {"sets": list(sets), "systems": rows, "student_keeps": kept, "paper_table1": PAPER,
            "members": [str(m) for m in members], "temperature_sweep": sweep,
            "chosen_student": chosen.name if chosen else None,
            "section6": section6, "section6_recovered": recovered, "paper_section6": PAPER_SECTION6,
            "ensemble_variants": _variants(exp, ens_fa, sweep, sets), "seeds": _seeds(ens_fa, sets),
            "significance": significance(counts, _pairs(counts), sets, utt2spk, groups),
            "stage_seconds": _stage_times(stage_times),
            "soft_targets": {p.name: read_json(p / "info.json") for p in exp.soft_target_dirs()},
            "per_member_soft_targets": len(exp.soft_target_dirs(members=True)), "missing": missing,
            "environment": environment(), "model_environments": model_environments(gmm_dir, nnet_dir, members),
            "decode_environments": decode_environments(gmm_dir, nnet_dir)}


def compare(gmm_dir: str | Path, nnet_dir: str | Path, out_dir: str | Path,
            sets: tuple[str, str] = ("dev", "test"), stage_times: str | Path | None = None,
            data_root: str | Path | None = None, adult_age: int = ADULT_AGE) -> dict:
    """Write out_dir/results.{json,md} and the plots; returns the results."""
    out_dir = Path(out_dir)
    res = gather(gmm_dir, nnet_dir, sets, stage_times, data_root, adult_age)
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
    lines += md_table(["system", "senones", "silence senones", "per speech phone (mean, min–max)",
                     *(f"{m} {s} {k}" for m in ("GMM", "DNN") for s, k in
                       ((tune, "senone acc."), (test, "senone acc."), (test, "phone acc."), (tune, "WER"), (test, "WER")))],
                    [[name, r["senones"], r["silence_senones"],
                      f"{r['per_speech_phone'][0]:.1f} ({r['per_speech_phone'][1]}–{r['per_speech_phone'][2]})",
                      *(cell(r[m].get(key)) for m in ("gmm", "dnn") for key in
                        (f"{tune}_frame_acc", f"{test}_frame_acc", f"{test}_phone_acc", f"{tune}_wer", f"{test}_wer"))]
                     for name, r in res.items()])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_dir / "senones.json") as f:
        json.dump(res, f, indent=2)
    write_list(out_dir / "senones.md", lines)
    return res

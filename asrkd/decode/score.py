"""Scoring (Kaldi compute-wer + score.sh): WER, SER, per-speaker WER, per-utterance
alignments of reference and hypothesis words; frame accuracy against a forced alignment."""

from __future__ import annotations

import logging
from pathlib import Path

import kaldialign
import numpy as np

from asrkd.checkpoint import fingerprint
from asrkd.data import read_table, sort_key
from asrkd.hmm.alignment import AlignmentDir
from asrkd.nnet.soft_targets import average_posteriors
from asrkd.utils import AsrkdError, write_list

log = logging.getLogger(__name__)
EPS = "<eps>"


def error_counts(ref: list[str], hyp: list[str]) -> dict:
    e = kaldialign.edit_distance(ref, hyp)
    return {"ins": e["ins"], "del": e["del"], "sub": e["sub"], "err": e["total"], "words": len(ref)}


def compute_wer(refs: dict[str, str], hyps: dict[str, str], utt2spk: dict[str, str] | None = None) -> dict:
    """Corpus WER/SER over the reference utterances; a missing hypothesis counts as empty
    (Kaldi's strict mode would abort), hypotheses without a reference are ignored."""
    extra = sorted(set(hyps) - set(refs), key=sort_key)
    if extra:
        log.warning("%d hypotheses have no reference, ignored (first: %s)", len(extra), extra[0])
    missing = [u for u in refs if u not in hyps]
    per_utt, tot, spk = {}, {"ins": 0, "del": 0, "sub": 0, "err": 0, "words": 0}, {}
    sent_err = 0
    for utt in sorted(refs, key=sort_key):
        r, h = refs[utt].split(), hyps.get(utt, "").split()
        c = error_counts(r, h)
        per_utt[utt] = c | {"ali": kaldialign.align(r, h, EPS)}
        sent_err += c["err"] > 0
        for k in tot:
            tot[k] += c[k]
        if utt2spk:
            s = spk.setdefault(utt2spk.get(utt, utt), {"err": 0, "words": 0, "sents": 0})
            s["err"], s["words"], s["sents"] = s["err"] + c["err"], s["words"] + c["words"], s["sents"] + 1
    result = {**tot, "wer": 100.0 * tot["err"] / tot["words"] if tot["words"] else (0.0 if not tot["err"] else
              float("inf")), "sents": len(refs), "sent_err": int(sent_err),
              "ser": 100.0 * sent_err / len(refs) if refs else 0.0, "missing": len(missing), "per_utt": per_utt}
    if utt2spk:
        result["per_spk"] = {s: v | {"wer": 100.0 * v["err"] / max(v["words"], 1)} for s, v in sorted(spk.items())}
    return result


def format_wer(r: dict) -> list[str]:
    """Kaldi's compute-wer summary lines."""
    return [f"%WER {r['wer']:.2f} [ {r['err']} / {r['words']}, {r['ins']} ins, {r['del']} del, {r['sub']} sub ]",
            f"%SER {r['ser']:.2f} [ {r['sent_err']} / {r['sents']} ]",
            f"Scored {r['sents']} sentences, {r['missing']} not present in hyp."]


def write_score(out_dir: Path, result: dict, name: str = "wer") -> None:
    """`wer`-style summary, plus per-utterance alignments and per-speaker WER next to it."""
    write_list(out_dir / name, format_wer(result))
    lines = []
    for utt, u in result["per_utt"].items():
        lines += [f"{utt} ref  " + " ".join(r for r, _ in u["ali"]),
                  f"{utt} hyp  " + " ".join(h for _, h in u["ali"]),
                  f"{utt} op   " + " ".join("C" if r == h else "I" if r == EPS else "D" if h == EPS else "S"
                                          for r, h in u["ali"]),
                  f"{utt} #csid {u['words'] - u['sub'] - u['del']} {u['sub']} {u['ins']} {u['del']}"]
    write_list(out_dir / f"{name}_details" / "per_utt", lines)
    if "per_spk" in result:
        write_list(out_dir / f"{name}_details" / "per_spk",
                   [f"{s} {v['wer']:.2f} {v['err']} {v['words']} {v['sents']}" for s, v in result["per_spk"].items()])


def score(data_dir: str | Path, hyp_text: str | Path, out_dir: str | Path) -> dict:
    """Score a Kaldi `text` of hypotheses against `data_dir/text`; writes `out_dir/wer`."""
    data_dir = Path(data_dir)
    refs = read_table(data_dir / "text", allow_empty_value=True)
    hyps = read_table(hyp_text, allow_empty_value=True)
    utt2spk = read_table(data_dir / "utt2spk") if (data_dir / "utt2spk").is_file() else None
    result = compute_wer(refs, hyps, utt2spk)
    if not result["words"]:
        raise AsrkdError(f"{data_dir / 'text'}: no reference words to score")
    write_score(Path(out_dir), result)
    return result


def frame_accuracy(predictions: dict[str, np.ndarray], ali: AlignmentDir) -> dict:
    """Fraction of frames whose predicted senone (argmax) equals the forced alignment's, and
    (with the alignment's tree) whose predicted senone belongs to the aligned phone; `per_utt`
    holds each utterance's (correct, frames), for confidence intervals."""
    correct = phone_correct = frames = utts = 0
    mismatched, per_utt = [], {}
    phones = ali.pdf_phones
    for utt, pred in predictions.items():
        if utt not in ali.ali:
            continue
        ref = ali.ali[utt]
        if len(ref) != len(pred):
            mismatched.append(utt)
            continue
        per_utt[utt] = [int((ref == pred).sum()), len(ref)]
        correct, frames, utts = correct + per_utt[utt][0], frames + len(ref), utts + 1
        if phones is not None:
            phone_correct += int((phones[ref] == phones[pred]).sum())
    if not frames:
        raise AsrkdError(f"{ali.path}: no utterance shared with the model's outputs")
    result = {"frame_accuracy": correct / frames, "frames": frames, "utts": utts,
              "not_aligned": len(predictions) - utts - len(mismatched), "length_mismatch": mismatched,
              "per_utt": per_utt}
    if phones is not None:
        result["phone_frame_accuracy"] = phone_correct / frames
    if mismatched:
        log.warning("%d utterances have a different length from their alignment, skipped", len(mismatched))
    return result


def check_alignment(ali: AlignmentDir, scorer) -> None:
    """One-line errors for an alignment over another senone inventory or tree than the model's."""
    if scorer.num_pdfs != ali.num_pdfs:
        raise AsrkdError(f"{ali.path}: an alignment over {ali.num_pdfs} senones, the model has {scorer.num_pdfs}")
    if scorer.tree and (ali.path / "tree").is_file() and fingerprint(ali.path / "tree") != scorer.tree:
        raise AsrkdError(f"{ali.path}: aligned with another tree than the model's alignment")


def ensemble_frame_accuracy(scorer, ali: AlignmentDir, model_dirs: list) -> dict:
    """From one forward pass per member (an `NnetScorer` of several models): the ensemble's
    frame accuracy, each member's, the ensemble of the first k members for every k
    (arithmetic mean: the size curve), the geometric mean of all and, for members of several
    architectures, the ensemble of each architecture's members (`by_arch`)."""
    n = len(model_dirs)
    kinds = [m.arch.get("type", "dnn") for m in scorer.models]
    by_arch = {a: [i for i, k in enumerate(kinds) if k == a] for a in dict.fromkeys(kinds)} if len(set(kinds)) > 1 \
        else {}
    preds = {name: {} for name in [*range(-n, 0), *range(1, n + 1), "geometric", *by_arch]}  # -n..-1: the members
    for u in scorer.keys():
        logits = scorer.member_logits(u)
        for m, z in enumerate(logits):
            preds[m - n][u] = z.argmax(1).numpy()
        for k in range(1, n + 1):
            preds[k][u] = average_posteriors(logits[:k]).argmax(1).numpy()
        preds["geometric"][u] = average_posteriors(logits, mean="geometric").argmax(1).numpy()
        for a, idx in by_arch.items():
            preds[a][u] = average_posteriors([logits[i] for i in idx]).argmax(1).numpy()
    members = [frame_accuracy(preds[m - n], ali) | {"model": str(d), "arch": kinds[m]}
               for m, d in enumerate(model_dirs)]
    accs = [m["frame_accuracy"] for m in members]
    return frame_accuracy(preds[n], ali) | {
        "members": members, "member_mean": sum(accs) / len(accs), "member_min": min(accs), "member_max": max(accs),
        "geometric": frame_accuracy(preds["geometric"], ali),
        "size_curve": {k: frame_accuracy(preds[k], ali)["frame_accuracy"] for k in range(1, n + 1)},
        **({"by_arch": {a: frame_accuracy(preds[a], ali) | {"members": len(idx)} for a, idx in by_arch.items()}}
           if by_arch else {})}

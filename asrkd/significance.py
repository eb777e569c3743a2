"""Bootstrap confidence intervals and the paired bootstrap (Bisani and Ney 2004) for WER and
frame accuracy, resampling speakers (or utterances) with replacement.

A system's numbers per utterance are (errors, words) from its decode's
`wer_details/per_utt` or (correct frames, frames) from its frame-accuracy record's
`per_utt`. A rate over a resample is the ratio of the summed counts (100 x), so long
utterances weigh as in the corpus figure. Two systems are compared on the same resamples:
the probability of improvement is the share of resamples in which the second system is
better, and a difference counts as significant (two-sided, at 1 - LEVEL) when the share in
which it is better, or the share in which it is worse, is at least 97.5%: then the 95%
percentile interval of the difference excludes 0.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from asrkd.utils import AsrkdError

RESAMPLES = 1000
LEVEL = 95.0
ADULT_AGE = 18  # speakers of this age and over are adults in the per-group results


def read_per_utt_errors(decode_dir: str | Path) -> dict[str, tuple[int, int]] | None:
    """{utt: (errors, reference words)} from a decode's `wer_details/per_utt` `#csid` lines;
    None where the decode has no details."""
    path = Path(decode_dir) / "wer_details" / "per_utt"
    if not path.is_file():
        return None
    counts = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        f = line.split()
        if len(f) == 6 and f[1] == "#csid":
            if not all(re.fullmatch(r"\d+", x) for x in f[2:]):
                raise AsrkdError(f"{path}:{n}: a #csid line needs 4 counts: '{line}'")
            c, s, i, d = map(int, f[2:])
            counts[f[0]] = (s + i + d, c + s + d)
    return counts


def per_utt_frames(record: dict | None) -> dict[str, tuple[int, int]] | None:
    """{utt: (correct frames, frames)} from a frame-accuracy record; None for records written
    without per-utterance counts."""
    if not record or "per_utt" not in record:
        return None
    return {u: (int(c), int(n)) for u, (c, n) in record["per_utt"].items()}


def _blocks(utts: list[str], utt2spk: dict[str, str] | None) -> np.ndarray:
    """Each utterance's resampling block: its speaker, or itself without utt2spk."""
    if utt2spk is None:
        return np.arange(len(utts))
    missing = [u for u in utts if u not in utt2spk]
    if missing:
        raise AsrkdError(f"utterance '{missing[0]}' ({len(missing)} in all) has no speaker in utt2spk")
    _, block = np.unique([utt2spk[u] for u in utts], return_inverse=True)
    return block


def _block_sums(systems: list[dict], utts: list[str], block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per system and block, the summed numerators and denominators: arrays [systems, blocks]."""
    nblocks = int(block.max()) + 1
    num = np.stack([np.bincount(block, [s[u][0] for u in utts], nblocks) for s in systems])
    den = np.stack([np.bincount(block, [s[u][1] for u in utts], nblocks) for s in systems])
    return num, den


def _resampled_rates(systems: list[dict], utt2spk: dict | None, resamples: int, seed: int) -> tuple:
    """Each system's rate (100 x sum num / sum den) on the full set and on each resample of
    blocks; all systems on the same resamples, over the utterances they share."""
    utts = sorted(set.intersection(*(set(s) for s in systems)))
    if not utts:
        raise AsrkdError("the systems share no scored utterance")
    block = _blocks(utts, utt2spk)
    num, den = _block_sums(systems, utts, block)
    idx = np.random.default_rng(seed).integers(0, num.shape[1], size=(resamples, num.shape[1]))
    chunk = max(1, 10_000_000 // (len(systems) * num.shape[1]))  # resamples at a time: bounded memory
    with np.errstate(invalid="ignore", divide="ignore"):
        full = 100 * num.sum(1) / den.sum(1)
        boot = np.concatenate([100 * num[:, idx[i:i + chunk]].sum(2) / den[:, idx[i:i + chunk]].sum(2)
                               for i in range(0, resamples, chunk)], axis=1)  # [systems, resamples]
    return full, boot, len(utts), num.shape[1]


def confidence_interval(counts: dict[str, tuple[int, int]], utt2spk: dict | None = None,
                        resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> dict:
    """A rate and its percentile bootstrap interval over speakers (utterances without utt2spk)."""
    full, boot, n_utts, n_blocks = _resampled_rates([counts], utt2spk, resamples, seed)
    lo, hi = np.nanpercentile(boot[0], [(100 - level) / 2, (100 + level) / 2])
    return {"value": float(full[0]), "ci": [float(lo), float(hi)], "level": level,
            "unit": "speaker" if utt2spk else "utterance", "blocks": n_blocks, "utts": n_utts}


def paired_bootstrap(a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]], lower_is_better: bool,
                     utt2spk: dict | None = None, resamples: int = RESAMPLES, level: float = LEVEL,
                     seed: int = 0) -> dict:
    """System b against system a on the same resamples: the difference b - a, its interval,
    and the probability that b is better (Bisani and Ney 2004)."""
    full, boot, n_utts, n_blocks = _resampled_rates([a, b], utt2spk, resamples, seed)
    gain = (boot[0] - boot[1]) if lower_is_better else (boot[1] - boot[0])
    p, p_worse = float(np.mean(gain > 0)), float(np.mean(gain < 0))  # ties count for neither
    lo, hi = np.nanpercentile(boot[1] - boot[0], [(100 - level) / 2, (100 + level) / 2])
    return {"value_a": float(full[0]), "value_b": float(full[1]), "delta": float(full[1] - full[0]),
            "ci": [float(lo), float(hi)], "p_improvement": p, "p_worse": p_worse,
            "significant": max(p, p_worse) >= 1 - (1 - level / 100) / 2,
            "unit": "speaker" if utt2spk else "utterance", "blocks": n_blocks, "utts": n_utts}


def group_rates(counts: dict[str, tuple[int, int]], utt2group: dict[str, str]) -> dict[str, float]:
    """The rate per group of utterances (e.g. children and adults)."""
    sums: dict[str, list[int]] = {}
    for u, (num, den) in counts.items():
        if u in utt2group:
            s = sums.setdefault(utt2group[u], [0, 0])
            s[0], s[1] = s[0] + num, s[1] + den
    return {g: 100 * n / d if d else None for g, (n, d) in sorted(sums.items())}


def _speaker_blocks(utt2spk: dict | None) -> dict | None:
    """utt2spk where it names two or more speakers (a bootstrap over one speaker says nothing), else None."""
    return utt2spk if utt2spk is not None and len(set(utt2spk.values())) > 1 else None


def _intervals(counts: dict[str, tuple[int, int]], utt2spk: dict | None) -> dict:
    """A rate's interval over speakers (where there are two or more) and over utterances."""
    return {"speaker": confidence_interval(counts, utt2spk) if _speaker_blocks(utt2spk) else None,
            "utterance": confidence_interval(counts)}


def significance(counts: dict[str, dict], pairs: list[tuple[str, str, str, tuple]], sets, utt2spk: dict,
                 utt2group: dict) -> dict:
    """For systems' per-utterance counts ({system: {set: {metric: counts or None}}}, metrics
    `wer` and `frame_acc`): each rate's intervals and its value per group, and for each pair
    (label, a, b, metrics) the paired bootstrap of b against a on those metrics, over speakers
    where there are two or more, else over utterances, and over utterances. utt2spk and
    utt2group are per set (or None)."""
    intervals: dict = {}
    groups: dict = {}
    for name, per_set in counts.items():
        for s in sets:
            for metric, c in per_set[s].items():
                if c:
                    intervals.setdefault(name, {}).setdefault(s, {})[metric] = _intervals(c, utt2spk.get(s))
                    if utt2group.get(s):
                        groups.setdefault(name, {}).setdefault(s, {})[metric] = group_rates(c, utt2group[s])
    paired = []
    for label, a, b, metrics in pairs:
        for s in sets:
            speakers = _speaker_blocks(utt2spk.get(s))
            for metric in metrics:
                ca, cb = (counts.get(x, {}).get(s, {}).get(metric) for x in (a, b))
                if ca and cb:
                    lower = metric == "wer"  # a lower WER, a higher frame accuracy is better
                    by_utt = paired_bootstrap(ca, cb, lower)
                    main = paired_bootstrap(ca, cb, lower, speakers) if speakers else by_utt
                    paired.append({"comparison": label, "a": a, "b": b, "set": s, "metric": metric, **main,
                                   "p_improvement_utterance": by_utt["p_improvement"]})
    return {"resamples": RESAMPLES, "level": LEVEL, "intervals": intervals, "paired": paired, "groups": groups}


def age_groups(spk2age: dict[str, str], utt2spk: dict[str, str], adult_age: int) -> dict[str, str]:
    """{utt: "children (under A)" or "adults (A and over)"} from a data dir's spk2age."""
    bad = [s for s, a in spk2age.items() if not a.isdigit()]
    if bad:
        raise AsrkdError(f"spk2age: speaker '{bad[0]}' has age '{spk2age[bad[0]]}', not a whole number of years")
    names = (f"children (under {adult_age})", f"adults ({adult_age} and over)")
    return {u: names[int(spk2age[s]) >= adult_age] for u, s in utt2spk.items() if s in spk2age}


def wer_bootci(data_dir: str | Path, decode_dirs: list[str | Path], adult_age: int = ADULT_AGE) -> dict:
    """Kaldi's compute-wer-bootci over decode dirs of one data dir: each WER with its intervals
    (over speakers and utterances) and per age group (with spk2age); with two dirs, the paired
    bootstrap of the second against the first."""
    from asrkd.data import read_table

    data_dir = Path(data_dir)
    utt2spk = read_table(data_dir / "utt2spk")
    groups = age_groups(read_table(data_dir / "spk2age"), utt2spk, adult_age) \
        if (data_dir / "spk2age").is_file() else None
    counts = {}
    for d in map(str, decode_dirs):
        c = read_per_utt_errors(d)
        if not c:
            raise AsrkdError(f"{d}/wer_details/per_utt: missing or empty (decode or score it first)")
        if extra := sorted(set(c) - set(utt2spk)):
            raise AsrkdError(f"{d}: {len(extra)} scored utterances are not in {data_dir} (e.g. '{extra[0]}')")
        counts[d] = {"set": {"wer": c}}
    names = list(counts)
    pairs = [(f"{names[1]} vs {names[0]}", names[0], names[1], ("wer",))] if len(names) == 2 else []
    return significance(counts, pairs, ["set"], {"set": utt2spk}, {"set": groups})


def format_bootci(res: dict) -> list[str]:
    """compute-wer-bootci's lines: each system's WER and interval, then the probability of improvement."""
    lines = []
    for name, per_set in res["intervals"].items():
        for unit, iv in per_set["set"]["wer"].items():
            if iv:
                lines.append(f"{name}: %WER {iv['value']:.2f} {iv['level']:g}% Conf Interval [ {iv['ci'][0]:.2f}, "
                             f"{iv['ci'][1]:.2f} ] over {iv['blocks']} {unit}s")
        for group, wer in res["groups"].get(name, {}).get("set", {}).get("wer", {}).items():
            lines.append(f"{name}: %WER {wer:.2f} for {group}" if wer is not None else f"{name}: no words for {group}")
    for p in res["paired"]:
        lines.append(f"Probability of {p['b']} improving {p['a']}: {100 * p['p_improvement']:.1f}% over "
                     f"{p['unit']}s ({100 * p['p_improvement_utterance']:.1f}% over utterances); difference "
                     f"{p['delta']:+.2f} [ {p['ci'][0]:+.2f}, {p['ci'][1]:+.2f} ]"
                     + ("" if p["significant"] else ", not significant"))
    return lines

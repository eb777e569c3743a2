"""Bootstrap intervals, the paired bootstrap and age groups on counts with known answers."""

import json
import numpy as np
import pytest

from asrkd.decode.score import compute_wer, write_score
from asrkd.significance import (age_groups, confidence_interval, group_rates, paired_bootstrap, per_utt_frames,
                                read_per_utt_errors, significance)
from asrkd.utils import AsrkdError


def test_per_utt_errors_read_back_from_the_scoring(tmp_path):
    refs = {"s1-a": "A B C D", "s1-b": "A B", "s2-a": "C D E"}
    hyps = {"s1-a": "A X C", "s1-b": "A B", "s2-a": "C D E F G"}
    result = compute_wer(refs, hyps)
    write_score(tmp_path, result)
    counts = read_per_utt_errors(tmp_path)
    assert counts == {"s1-a": (2, 4), "s1-b": (0, 2), "s2-a": (2, 3)}
    assert sum(e for e, _ in counts.values()) == result["err"] and sum(w for _, w in counts.values()) == result["words"]
    assert read_per_utt_errors(tmp_path / "missing") is None
    (tmp_path / "wer_details/per_utt").write_text("u #csid 1 x 0 0\n")
    with pytest.raises(AsrkdError, match="needs 4 counts"):
        read_per_utt_errors(tmp_path)
    assert per_utt_frames({"frame_accuracy": 0.5}) is None
    assert per_utt_frames({"per_utt": {"u": [3, 6]}}) == {"u": (3, 6)}


def _two_speaker_sets(rng, n=200):
    """Utterances of 20 speakers; speaker k's utterances have an error rate near k / 40."""
    utt2spk = {f"spk{k:02d}-{i:03d}": f"spk{k:02d}" for k in range(20) for i in range(n // 20)}
    words = {u: int(rng.integers(5, 15)) for u in utt2spk}
    errs = {u: int(rng.binomial(words[u], int(utt2spk[u][3:]) / 40)) for u in utt2spk}
    return utt2spk, {u: (errs[u], words[u]) for u in utt2spk}


def test_interval_holds_the_value_and_speakers_widen_it():
    utt2spk, counts = _two_speaker_sets(np.random.default_rng(0))
    total = 100 * sum(e for e, _ in counts.values()) / sum(w for _, w in counts.values())
    by_utt, by_spk = confidence_interval(counts), confidence_interval(counts, utt2spk)
    assert by_utt["value"] == pytest.approx(total) and by_spk["value"] == pytest.approx(total)
    assert by_utt["ci"][0] < total < by_utt["ci"][1] and by_spk["ci"][0] < total < by_spk["ci"][1]
    assert (by_utt["unit"], by_utt["blocks"], by_spk["unit"], by_spk["blocks"]) == ("utterance", 200, "speaker", 20)
    # errors cluster by speaker, so resampling speakers gives the wider interval
    assert by_spk["ci"][1] - by_spk["ci"][0] > by_utt["ci"][1] - by_utt["ci"][0]
    same = {u: (1, 10) for u in counts}
    assert confidence_interval(same, utt2spk)["ci"] == pytest.approx([10.0, 10.0])
    with pytest.raises(AsrkdError, match="no speaker"):
        confidence_interval(counts, {})


def test_paired_bootstrap_finds_a_real_gain_and_not_a_tie():
    rng = np.random.default_rng(1)
    utt2spk, a = _two_speaker_sets(rng)
    better = {u: (max(e - 1, 0), w) for u, (e, w) in a.items()}  # one error fewer where there was one
    r = paired_bootstrap(a, better, lower_is_better=True, utt2spk=utt2spk)
    assert r["delta"] < 0 and r["ci"][1] < 0 and r["p_improvement"] == 1.0 and r["significant"]
    worse = paired_bootstrap(better, a, lower_is_better=True, utt2spk=utt2spk)
    assert worse["p_improvement"] == 0.0 and worse["p_worse"] == 1.0 and worse["significant"]
    tie = paired_bootstrap(a, dict(a), lower_is_better=True, utt2spk=utt2spk)
    assert (tie["delta"], tie["p_improvement"], tie["p_worse"], tie["significant"]) == (0.0, 0.0, 0.0, False)
    # one utterance of 200 fixed: not significant
    u0 = next(u for u, (e, _) in a.items() if e)
    small = paired_bootstrap(a, {**a, u0: (a[u0][0] - 1, a[u0][1])}, lower_is_better=True, utt2spk=utt2spk)
    assert 0 < small["p_improvement"] < 0.95 and not small["significant"]
    # two-sided: better in 96% of the resamples is not enough, and the 95% interval holds 0 then
    fixed = [u for u, (e, w) in a.items() if e and w > 5][:4]
    some = {**a, **{u: (a[u][0] - 1, a[u][1]) for u in fixed}}
    runs = [paired_bootstrap(a, some, True, utt2spk=utt2spk, seed=s) for s in range(5)]
    assert any(0.95 <= r["p_improvement"] < 0.975 for r in runs)
    for r in runs:
        assert r["significant"] == (r["p_improvement"] >= 0.975) and (r["significant"] or r["ci"][1] >= 0)
    acc = paired_bootstrap({u: (w - e, w) for u, (e, w) in a.items()},
                           {u: (w - e, w) for u, (e, w) in better.items()}, lower_is_better=False)
    assert acc["p_improvement"] == 1.0 and acc["unit"] == "utterance"


def test_significance_over_systems_groups_and_pairs():
    utt2spk, a = _two_speaker_sets(np.random.default_rng(2))
    b = {u: (max(e - 1, 0), w) for u, (e, w) in a.items()}
    spk2age = {s: str(6 + int(s[3:])) for s in set(utt2spk.values())}  # ages 6..25
    groups = age_groups(spk2age, utt2spk, 18)
    assert set(groups.values()) == {"children (under 18)", "adults (18 and over)"}
    assert groups["spk11-000"] == "children (under 18)" and groups["spk12-000"] == "adults (18 and over)"
    counts = {"A": {"test": {"wer": a, "frame_acc": None}}, "B": {"test": {"wer": b, "frame_acc": None}}}
    sig = significance(counts, [("B vs A", "A", "B", ("wer", "frame_acc")), ("A vs missing", "missing", "A", ("wer",))],
                       ["test"],
                       {"test": utt2spk}, {"test": groups})
    assert set(sig["intervals"]) == {"A", "B"} and "frame_acc" not in sig["intervals"]["A"]["test"]
    assert sig["intervals"]["A"]["test"]["wer"]["speaker"]["blocks"] == 20
    [pair] = sig["paired"]
    assert (pair["comparison"], pair["a"], pair["b"], pair["metric"], pair["unit"]) == \
        ("B vs A", "A", "B", "wer", "speaker") and pair["significant"]
    assert sig["groups"]["A"]["test"]["wer"] == group_rates(a, groups)
    children = [c for u, c in a.items() if groups[u].startswith("children")]
    assert group_rates(a, groups)["children (under 18)"] == pytest.approx(
        100 * sum(e for e, _ in children) / sum(w for _, w in children))
    one_speaker = significance(counts, [], ["test"], {"test": {u: "x" for u in a}}, {"test": None})
    assert one_speaker["intervals"]["A"]["test"]["wer"]["speaker"] is None and not one_speaker["groups"]
    with pytest.raises(AsrkdError, match="not a whole number"):
        age_groups({"spk00": "adult"}, utt2spk, 18)


def test_wer_bootci_command(tmp_path, capsys):
    from asrkd.cli import main
    from asrkd.data import write_table
    from asrkd.decode.score import score

    rng = np.random.default_rng(3)
    utt2spk, a = _two_speaker_sets(rng)
    data = tmp_path / "data"
    data.mkdir()
    refs = {u: " ".join(["W"] * w) for u, (_, w) in a.items()}
    write_table(data / "text", refs)
    write_table(data / "utt2spk", utt2spk)
    write_table(data / "spk2age", {s: str(6 + int(s[3:])) for s in set(utt2spk.values())})
    for name, errs in (("sys1", a), ("sys2", {u: (max(e - 1, 0), w) for u, (e, w) in a.items()})):
        hyps = {u: " ".join(["W"] * (w - e) + ["X"] * e) for u, (e, w) in errs.items()}  # e substitutions
        write_table(tmp_path / f"{name}.txt", hyps)
        score(data, tmp_path / f"{name}.txt", tmp_path / name)
    main(["wer-bootci", "--json", str(tmp_path / "ci.json"), str(data), str(tmp_path / "sys1"), str(tmp_path / "sys2")])
    out = capsys.readouterr().out
    assert f"{tmp_path / 'sys1'}: %WER" in out and "Conf Interval" in out and "over 20 speakers" in out
    assert "for children (under 18)" in out and f"Probability of {tmp_path / 'sys2'} improving" in out
    assert ": 100.0% over speakers" in out and "not significant" not in out
    res = json.loads((tmp_path / "ci.json").read_text())
    assert res["paired"][0]["significant"] and res["intervals"][str(tmp_path / "sys1")]["set"]["wer"]["speaker"]
    with pytest.raises(SystemExit):  # three dirs
        main(["wer-bootci", str(data), *(str(tmp_path / n) for n in ("sys1", "sys2", "sys1"))])
    with pytest.raises(SystemExit):  # no per_utt
        main(["wer-bootci", str(data), str(tmp_path)])

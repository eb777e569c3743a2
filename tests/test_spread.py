"""Seed spread statistics (asrkd.spread): summaries, the jackknife, Welch intervals against
scipy, and spread.json from a recipe-like layout of exp dirs."""

import json
import math

import pytest
from scipy import stats

from asrkd.cli import main
from asrkd.nnet.model import SenoneDnn, save_nnet
from asrkd.spread import jackknife_std, seed_spread, summarize, summarize_jackknife, welch_interval


def test_summarize_mean_std_ddof1_and_single_value():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s["mean"] == 2.5 and s["n"] == 4 and s["df"] == 3
    assert s["std"] == pytest.approx(math.sqrt(5 / 3))  # ddof=1, not sqrt(5/4)
    assert s["se"] == pytest.approx(math.sqrt(5 / 3) / 2)
    one = summarize([38.4])
    assert one["mean"] == 38.4 and one["std"] is None and one["se"] is None and one["n"] == 1
    with pytest.raises(ValueError):
        summarize([])


def test_jackknife_of_the_mean_is_its_standard_error():
    x = [38.0, 38.4, 37.9, 38.6, 38.2]
    loo = [(sum(x) - v) / (len(x) - 1) for v in x]
    assert jackknife_std(loo) == pytest.approx(stats.tstd(x) / math.sqrt(len(x)))
    s = summarize_jackknife(loo, full=sum(x) / len(x))
    assert s["estimate"] == pytest.approx(38.22) and s["se"] == pytest.approx(jackknife_std(loo))
    assert s["std"] == pytest.approx(stats.tstd(loo)) and s["n"] == 5 and s["df"] == 4


def test_welch_interval_matches_scipy():
    a, b = [40.07, 40.31, 39.95], [38.41, 38.60, 37.88, 38.52, 38.20]
    r = welch_interval(summarize(a), summarize(b))
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert r["interval"] == pytest.approx([ci.low, ci.high])
    assert r["difference"] == pytest.approx(sum(a) / 3 - sum(b) / 5) and r["exceeds_spread"] is True
    close = welch_interval(summarize([40.6, 40.9, 40.5]), summarize([40.76, 40.2, 41.0]), level=0.9)
    ci = stats.ttest_ind([40.6, 40.9, 40.5], [40.76, 40.2, 41.0], equal_var=False).confidence_interval(0.9)
    assert close["interval"] == pytest.approx([ci.low, ci.high]) and close["exceeds_spread"] is False
    assert welch_interval(summarize([1.0]), summarize(b))["exceeds_spread"] is None
    same = welch_interval(summarize([2.0, 2.0]), summarize([1.0, 1.0]))  # no spread at all: any difference
    assert same["exceeds_spread"] is True and same["interval"] == [1.0, 1.0]


def _model(d, fa: dict, wer: dict | None = None, seed: int | None = None):
    """A model dir's results; with `seed`, also a (tiny) model file recording that seed."""
    d.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        save_nnet(d / "final.pt", SenoneDnn(2, 2, 2, 1, 0, 0), {"seed": seed})
    for s, v in fa.items():
        (d / f"frame_accuracy_{s}.json").write_text(json.dumps({"frame_accuracy": v / 100}))
    for s, v in (wer or {}).items():
        (d / f"decode_{s}").mkdir()
        (d / f"decode_{s}" / "decode_info.json").write_text(json.dumps({"wer": v}))


def recipe_layout(root):
    """exp/nnet as the recipe leaves it (3 members, ensemble, distilled -> student_T2, a
    subset model) and exp/spread with the extra decodes and seeds."""
    nnet, spread = root / "exp/nnet", root / "exp/spread"
    members = [38.4, 38.6, 37.9]
    for k in range(1, 3):
        _model(nnet / f"member_{k}", {}, seed=k)
    _model(nnet / "member_0", {}, {"dev": 66.0, "test": 59.8}, seed=0)
    for k, w in ((1, 59.2), (2, 60.1)):
        _model(spread / f"member_{k}", {}, {"dev": 65.0, "test": w})
    _model(nnet / "ensemble", {}, {"dev": 63.2, "test": 58.6})
    for s, shift in (("dev", 1.5), ("test", 0.0)):
        (nnet / "ensemble" / f"frame_accuracy_{s}.json").write_text(json.dumps(
            {"frame_accuracy": 0.406, "members": [{"frame_accuracy": (a + shift) / 100} for a in members]}))
    for k, v in enumerate([40.1, 40.2, 40.4]):
        _model(spread / f"ensemble_without_{k}", {"test": v})
    _model(nnet / "student_T2", {"dev": 41.7, "test": 40.07}, {"dev": 62.8, "test": 58.2}, seed=0)
    (nnet / "distilled").symlink_to("student_T2")
    _model(nnet / "student_T1", {"dev": 41.0, "test": 39.0})
    _model(spread / "student_T2_seed2", {"dev": 41.6, "test": 39.95}, {"dev": 63.0, "test": 58.4}, seed=2)
    _model(spread / "student_T2_seed1", {"dev": 41.9, "test": 40.31}, {"dev": 62.5, "test": 58.0}, seed=1)
    _model(nnet / "subset_hard", {"test": 29.3}, seed=0)
    return nnet, spread


def test_seed_spread_json_from_recipe_layout(tmp_path):
    nnet, spread = recipe_layout(tmp_path)
    res = seed_spread(nnet, spread)
    assert json.loads((spread / "spread.json").read_text()) == res
    base = res["systems"]["baseline"]["metrics"]
    assert base["test_frame_acc"]["values"] == pytest.approx([38.4, 38.6, 37.9])
    assert base["dev_frame_acc"]["recipe"] == pytest.approx(39.9)
    assert base["test_wer"]["values"] == [59.8, 59.2, 60.1]
    assert base["test_wer"]["std"] == pytest.approx(0.458, abs=1e-3)
    ens = res["systems"]["ensemble"]["metrics"]
    assert ens["test_frame_acc"]["full"] == pytest.approx(40.6) and ens["test_frame_acc"]["n"] == 3
    assert ens["test_frame_acc"]["se"] == pytest.approx(jackknife_std([40.1, 40.2, 40.4]))
    assert ens["test_wer"]["n"] == 0 and ens["test_wer"]["se"] is None  # no leave-one-out decodes
    dist = res["systems"]["distilled"]["metrics"]
    assert dist["test_frame_acc"]["runs"] == [str(nnet / "student_T2"), str(spread / "student_T2_seed1"),
                                              str(spread / "student_T2_seed2")]
    assert dist["test_frame_acc"]["mean"] == pytest.approx(40.11) and dist["test_frame_acc"]["recipe"] == 40.07
    assert res["systems"]["subset_hard"]["metrics"]["test_frame_acc"]["n"] == 1
    assert "student_mixup" not in res["systems"] and "subset_soft" not in res["systems"]
    diffs = {(d["comparison"], d["metric"]): d for d in res["differences"]}
    d = diffs["distilled vs baseline", "test_frame_acc"]
    assert d["recipe_difference"] == pytest.approx(40.07 - 38.4) and d["exceeds_spread"] is True
    assert d["difference"] == pytest.approx(40.11 - (38.4 + 38.6 + 37.9) / 3)
    d = diffs["distilled vs ensemble", "test_frame_acc"]
    assert d["difference"] == pytest.approx(40.11 - 40.6) and d["exceeds_spread"] is False
    d = diffs["distilled vs ensemble", "test_wer"]
    assert d["exceeds_spread"] is None and "ensemble has a single run" in d["note"]
    assert not any(k[0] == "subset soft vs hard" for k in diffs)


def test_seed_spread_cli(tmp_path, monkeypatch, capsys):
    recipe_layout(tmp_path)
    monkeypatch.chdir(tmp_path)
    main(["seed-spread", "--level", "0.9", "--out", "spread90.json", "exp/spread"])
    out = capsys.readouterr().out
    assert "distilled vs baseline" in out and "exceeds the spread" in out and "90% Welch" in out
    assert json.loads((tmp_path / "spread90.json").read_text())["level"] == 0.9
    (tmp_path / "exp/nnet/ensemble/frame_accuracy_dev.json").unlink()
    with pytest.raises(SystemExit):
        main(["seed-spread", "exp/spread"])

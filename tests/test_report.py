"""The comparison report from a results dict: tables, shares, and the parts left out when an
experiment was not run."""

from asrkd.report import PAPER, PAPER_SECTION6, _stage_times
from asrkd.report_md import SUBSET_MIXUP, write_markdown


def results(**extra):
    sys = {"params": 5.75e6, "mflops_per_frame": 11.5, "train_seconds": 600, "arch": "1024x4"}
    rows = {"baseline (member 0)": {**sys, "dev_frame_acc": 14.0, "test_frame_acc": 16.0, "test_phone_acc": 50.0,
                                    "dev_wer": 68.0, "test_wer": 64.0, "test_lmwt": [12, 1], "test_rtf": 0.1},
            "ensemble of 5": {**sys, "dev_frame_acc": 16.0, "test_frame_acc": 18.0, "test_wer": 63.0},
            "distilled (T=2)": {**sys, "dev_frame_acc": 15.5, "test_frame_acc": 17.5, "test_wer": 63.5}}
    sc = {"1": 16.0, "2": 17.0, "5": 18.0}
    res = {"sets": ["dev", "test"], "systems": rows,
           "student_keeps": {"distilled (T=2)": {"test_frame_acc": 0.75, "test_wer": 0.5}},
           "paper_table1": PAPER, "temperature_sweep": {}, "section6": {}, "section6_recovered": {},
           "paper_section6": PAPER_SECTION6, "seeds": {"test": {"frame_acc": [16.0, 16.2], "mean": 16.1, "std": 0.14,
                                                                "min": 16.0, "max": 16.2}},
           "ensemble_variants": {s: {"arithmetic": 18.0, "geometric": 17.9, "size_curve": {int(k): v for k, v in sc.items()}}
                                 for s in ("dev", "test")},
           "stage_seconds": {}, "soft_targets": {}, "per_member_soft_targets": 0}
    return res | extra


def test_markdown_main_table_and_omitted_parts(tmp_path):
    write_markdown(results(), tmp_path / "r.md")
    md = (tmp_path / "r.md").read_text()
    assert "| baseline (member 0) | 1024x4 | 14.00 | 16.00 | 50.00 | 68.00 | 64.00 | 12, 1 | 5.75 M | 11.5 | 0.100 | 10.0 min |" in md
    assert "- distilled (T=2): test frame acc 75.0%, test wer 50.0%" in md and "| distilled | 60.8% | 10.7% |" in md
    assert "| test | 18.00 | 17.90 | 16.00 | 17.00 | 18.00 |" in md  # variants with the size curve
    for absent in ("## Temperature sweep", "## Soft targets as a regulariser", "Teacher switching", "## Time per stage"):
        assert absent not in md


def test_markdown_experiments(tmp_path):
    row = {"params": 1, "mflops_per_frame": 1, "train_seconds": 60, "epochs": 7, "best_epoch": 5,
           "dev_frame_acc": 15.0, "test_frame_acc": 17.0, "dev_wer": 68.0, "test_wer": 64.0}
    res = results(
        temperature_sweep={"hard targets only (member 0)": {**row, "chosen": False}, "T=2": {**row, "chosen": True}},
        section6={"subset, hard targets": {**row, "train_frames": 21000, "train_frame_acc": 60.0},
                  "subset, soft targets": {**row, "train_frames": 21000, "train_frame_acc": 30.0},
                  SUBSET_MIXUP: {**row, "train_frames": 21000, "train_frame_acc": 25.0}},
        section6_recovered={"subset, soft targets": 0.9, SUBSET_MIXUP: 0.95}, stage_seconds={10: 3000, 12: 1200},
        ensemble_variants={**results()["ensemble_variants"],
                           "teacher_switching": {"temperature": 2.0, "switched": row, "averaged": row}})
    write_markdown(res, tmp_path / "r.md")
    md = (tmp_path / "r.md").read_text()
    assert "| **T=2** | 15.00 | 17.00 | – | 68.00 | 64.00 | 7 |" in md
    assert "| subset, hard targets | 21,000 | 60.00 | 15.00 | 17.00 | 7 (5) |" in md
    assert "- subset, soft targets: recovers 90.0% of the test frame-accuracy gap" in md
    assert f"- {SUBSET_MIXUP}: recovers 95.0%" in md and "mixup" in md
    assert "| switched teachers | 15.00 | 17.00 | 68.00 | 64.00 | 7 |" in md
    assert "| 10 | 50.0 |" in md and "| these stages | 70.0 |" in md


def test_stage_times_keep_the_latest_run(tmp_path):
    tsv = tmp_path / "stage_times.tsv"
    tsv.write_text("3\t100\tx\n10\t50\tx\n3\t90\tx\nbad line\n")
    assert _stage_times(tsv) == {3: 90, 10: 50}
    assert _stage_times(tmp_path / "missing.tsv") == {} and _stage_times(None) == {}


def test_markdown_significance(tmp_path):
    iv = {"value": 64.0, "ci": [60.5, 67.25], "level": 95.0, "unit": "speaker", "blocks": 20, "utts": 400}
    pair = {"comparison": "distilled vs baseline", "a": "baseline (member 0)", "b": "distilled (T=2)", "set": "test",
            "metric": "wer", "value_a": 64.0, "value_b": 63.5, "delta": -0.5, "ci": [-1.25, 0.5],
            "p_improvement": 0.81, "p_worse": 0.17, "significant": False, "unit": "speaker", "blocks": 20,
            "utts": 400, "p_improvement_utterance": 0.9}
    groups = {"test": {"wer": {"adults (18 and over)": 60.0, "children (under 18)": 70.0}}}
    sig = {"resamples": 1000, "level": 95.0, "paired": [pair, {**pair, "set": "dev"}],
           "intervals": {"baseline (member 0)": {"test": {"wer": {"speaker": iv, "utterance": iv}}}},
           "groups": {"baseline (member 0)": groups}}
    write_markdown(results(significance=sig), tmp_path / "r.md")
    md = (tmp_path / "r.md").read_text()
    assert "95% percentile bootstrap intervals over the test set's 20 speakers (1000 resamples)" in md
    assert "| baseline (member 0) | 64.00 [60.50, 67.25] | – | 60.00 | 70.00 | – | – |" in md
    assert "| distilled vs baseline | WER | 64.00 | 63.50 | -0.50 [-1.25, +0.50] | 0.810 | 0.900 | " \
           "**not significant** |" in md
    assert md.count("| distilled vs baseline |") == 1  # the test set's only
    write_markdown(results(), tmp_path / "old.md")  # results without significance
    assert "## Significance" not in (tmp_path / "old.md").read_text()


def test_markdown_members_of_two_architectures(tmp_path):
    variants = results()["ensemble_variants"]
    for v in variants.values():
        v["by_arch"] = {"dnn": {"members": 3, "frame_acc": 17.25}, "tdnn": {"members": 2, "frame_acc": 17.5}}
    write_markdown(results(ensemble_variants=variants), tmp_path / "r.md")
    md = (tmp_path / "r.md").read_text()
    assert "| set | dnn (3) | tdnn (2) | all |" in md and "| test | 17.25 | 17.50 | 18.00 |" in md

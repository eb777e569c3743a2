"""The yesno recipe end to end through run.sh (GMMs, then the tiny DNN ensemble, soft targets,
student and comparison): stages, outputs, and no-op re-runs."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from asrkd.cli import main
from asrkd.data import read_table, validate_data_dir
from asrkd.report_md import STUDENT_MIXUP, SUBSET_MIXUP
from conftest import ROOT, YESNO


def run_script(script, *args, cwd=None):
    """A recipe's bash script in this virtualenv (its set-up step skipped)."""
    env = dict(os.environ, ASRKD_SKIP_SETUP="1", ASRKD_VENV=sys.prefix)
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, cwd=cwd)


def run_recipe(recipe, *args, cwd=None):
    return run_script(recipe / "run.sh", *args, cwd=cwd)


def check_compare_reports_what_exists(recipe, tmp):
    """compare ignores copies beside the results, names a missing student, and fails when the
    ensemble's numbers were measured with a member that is gone."""
    nnet = tmp / "nnet"
    shutil.copytree(recipe / "exp/nnet", nnet, symlinks=True)
    shutil.copytree(nnet / "member_1", nnet / "member_1.bak")
    (nnet / ".soft_T1.tmp").mkdir()
    (nnet / "distilled").unlink()
    args = ["--gmm", recipe / "exp/tri", "--nnet", nnet, "--sets", "train_yesno,test_yesno", tmp / "out"]
    main(list(map(str, ["compare", *args])))
    res = json.loads((tmp / "out/results.json").read_text())
    assert "ensemble of 2" in res["systems"] and not any(k.startswith("distilled (T=") for k in res["systems"])
    assert "Not in this table: distilled student" in (tmp / "out/results.md").read_text()
    shutil.rmtree(nnet / "member_1")
    with pytest.raises(SystemExit):
        main(list(map(str, ["compare", *args])))


def check_significance(res, students):
    """The bootstrap intervals hold each reported value (one speaker in yesno: utterances are
    resampled), and the paired comparisons are there."""
    systems, sig = res["systems"], res["significance"]
    for name in ("tri GMM", "baseline (member 0)", "ensemble of 2", *students, "subset, soft targets"):
        for metric, key in (("wer", "test_yesno_wer"), ("frame_acc", "test_yesno_frame_acc"))[name.startswith("sub"):]:
            iv = sig["intervals"][name]["test_yesno"][metric]
            value = (res["section6"] if name.startswith("subset") else systems)[name][key]
            assert iv["speaker"] is None and iv["utterance"]["blocks"] == 30, name
            assert iv["utterance"]["value"] == pytest.approx(value) and \
                iv["utterance"]["ci"][0] <= value <= iv["utterance"]["ci"][1], (name, metric)
    assert {p["comparison"] for p in sig["paired"]} == {
        "baseline vs GMM", "ensemble vs baseline", "distilled vs baseline", "distilled vs ensemble",
        "mixup student vs distilled", "mixup student vs ensemble", "subset soft vs subset hard",
        "subset mixup vs subset soft"}
    assert {p["metric"] for p in sig["paired"] if p["comparison"] == "baseline vs GMM"} == {"wer"}


def check_seed_spread(recipe):
    """local/seed_spread.sh on a finished run: member 1 decoded, the leave-one-out ensembles,
    a second seed of both students, spread.json; a rerun finds it all done."""
    args = (recipe.parents[1] / "local/seed_spread.sh", "--train-set", "train_yesno", "--tune-set", "train_yesno",
            "--test-set", "test_yesno", "--tune-ali", "exp/tri_ali", "--lm-weights", "2,5,10",
            "--word-ins-penalties", "0,1", "--subset-config", "conf/nnet.yaml", "--seeds", "1", "--subset", "false",
            "--threads", "1")
    proc = run_script(*args, cwd=recipe)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((recipe / "exp/spread/spread.json").read_text())
    systems = res["systems"]
    assert systems["baseline"]["metrics"]["test_yesno_wer"]["n"] == 2
    assert systems["ensemble"]["metrics"]["test_yesno_frame_acc"]["n"] == 2
    for name in ("distilled", "student_mixup"):
        assert systems[name]["metrics"]["test_yesno_wer"]["n"] == 2, name
    assert "subset_hard" in systems and systems["subset_hard"]["metrics"]["test_yesno_frame_acc"]["n"] == 1
    proc = run_script(*args, cwd=recipe)
    assert proc.returncode == 0 and "skipping" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    proc = run_script(*args, "--nnet-affix", "_other", cwd=recipe)   # a second config's models, not there
    assert proc.returncode == 1 and "exp/nnet_other/ensemble/frame_accuracy_train_yesno.json missing" in proc.stderr


def check_second_config(recipe, tmp):
    """--nnet-affix puts a second nnet config's ensemble beside the first, which stays as it was:
    teachers of two kinds whose DNN members are the first ensemble's (copied in, not retrained)."""
    first = sorted((p, p.stat().st_mtime_ns) for p in (recipe / "exp/nnet").rglob("*") if p.is_file())
    cfg = yaml.safe_load((recipe / "conf/nnet.yaml").read_text())
    (tmp / "mixed.yaml").write_text(yaml.safe_dump({**cfg, "member_archs": ["dnn", {"arch": "tdnn", "hidden": 16}]}))
    shutil.copytree(recipe / "exp/nnet/member_0", recipe / "exp/nnet_mixed/member_0")
    stamp = (recipe / "exp/nnet_mixed/member_0/final.pt").stat().st_mtime_ns
    compared = (recipe / "exp/compare/results.json").stat().st_mtime_ns
    proc = run_recipe(recipe, "--stage", "10", "--nnet-config", str(tmp / "mixed.yaml"), "--nnet-affix", "_mixed",
                      "--beyond-paper", "false", "--corpus-dir", str(YESNO))
    assert proc.returncode == 0, proc.stderr
    assert (recipe / "exp/nnet_mixed/member_0/final.pt").stat().st_mtime_ns == stamp
    arch = yaml.safe_load((recipe / "exp/nnet_mixed/member_1/nnet.yaml").read_text())
    assert (arch["arch"], arch["hidden"]) == ("tdnn", 16)
    assert first == sorted((p, p.stat().st_mtime_ns) for p in (recipe / "exp/nnet").rglob("*") if p.is_file())
    assert (recipe / "exp/compare/results.json").stat().st_mtime_ns == compared
    res = json.loads((recipe / "exp/compare_mixed/results.json").read_text())
    rows = res["systems"]
    assert rows["mean of members"]["params"] == rows["ensemble of 2"]["params"] / 2 != rows["baseline (member 0)"]["params"]
    assert next(r for name, r in rows.items() if name.startswith("distilled"))["test_yesno_wer"] is not None
    assert list(res["section6"])[2] == "subset, soft targets"


def copy_recipe(dest):
    """The yesno recipe and what it runs, without data/ and exp/."""
    for part in ("recipes/yesno", "recipes/utils", "local", "tools"):
        shutil.copytree(ROOT / part, dest / part, ignore=shutil.ignore_patterns("data", "exp", "__pycache__"))
    return dest / "recipes" / "yesno"


def test_yesno_recipe_stages(tmp_path):
    recipe = copy_recipe(tmp_path)
    proc = run_recipe(recipe, "--stop-stage", "1", "--corpus-dir", str(YESNO))
    assert proc.returncode == 0, proc.stderr
    assert (recipe / "data/lang/L.fst").is_file() and not (recipe / "data/lang_test").exists()

    proc = run_recipe(recipe, "--stage", "2", "--stop-stage", "3", "--nj", "2", "--corpus-dir", str(YESNO))
    assert proc.returncode == 0, proc.stderr
    assert (recipe / "data/lang_test/G.fst").is_file()
    for s in ("train_yesno", "test_yesno"):
        d = recipe / "data" / s
        assert validate_data_dir(d) == []
        assert len(read_table(d / "feats.scp")) == 30 and (d / "cmvn.scp").is_file()
    assert (recipe / "exp/log/make_fbank_train_yesno.log").is_file()

    feats = recipe / "data/train_yesno/feats.scp"
    stamp = feats.stat().st_mtime_ns
    proc = run_recipe(recipe, "--corpus-dir", str(YESNO))
    assert proc.returncode == 0, proc.stderr
    assert feats.stat().st_mtime_ns == stamp, "a finished stage must not run again"
    assert "skipping" in proc.stdout + proc.stderr
    # stages 4-9: mono, tri, alignments, graphs, decoding with the weight chosen on train
    for f in ("exp/mono/final.pt", "exp/tri/tree", "exp/tri_ali/ali.scp", "exp/tri_ali/phones.ctm",
              "exp/tri_ali/priors", "exp/tri/graph/HCLG.fst", "exp/tri/decode_test_yesno/text", "exp/tri2/final.mat",
              "exp/tri2_ali/final.mat", "exp/tri2_ali_test_yesno/ali.scp", "exp/tri2/decode_test_yesno/text"):
        assert (recipe / f).is_file(), f
    # Kaldi's yesno: 0% with the monophones; here at most 1 of the 240 words (every weight pair
    # ties on train, where the weights are chosen, and one of them costs a word on test); the
    # 20-leaf tri (and tri2, on LDA+MLLT features): at most 6
    for m, max_wer in (("mono", 0.42), ("tri", 2.5), ("tri2", 2.5)):
        wer = (recipe / f"exp/{m}/decode_test_yesno/wer").read_text().split()
        assert wer[0] == "%WER" and float(wer[1]) <= max_wer, (m, wer)
    # stages 10-17: ensemble, soft targets, temperature sweep, section 6, teacher switching,
    # frame accuracy, decoding, comparison
    res = json.loads((recipe / "exp/compare/results.json").read_text())
    systems = res["systems"]
    chosen = res["chosen_student"]
    assert chosen in ("student_T1", "student_T2") and (recipe / "exp/nnet/distilled").is_symlink()
    student, mixed = f"distilled (T={chosen[-1]})", f"{STUDENT_MIXUP} (T={chosen[-1]})"
    assert list(systems) == ["tri GMM", "baseline (member 0)", "mean of members", "ensemble of 2", student, mixed]
    assert set(res["student_keeps"]) <= {student, mixed}
    for name in ("baseline (member 0)", "ensemble of 2", student, mixed):
        assert systems[name]["test_yesno_frame_acc"] > 50, name  # 20 senones: chance is 5%
        # every training file starts with NO, so the tiny DNNs may insert a NO before a test file's
        # first YES (up to 21 of the test's 240 words); 15% is still far from chance
        assert systems[name]["test_yesno_wer"] <= 15, name
        assert systems[name]["test_yesno_phone_acc"] >= systems[name]["test_yesno_frame_acc"]
    assert systems["ensemble of 2"]["params"] == 2 * systems["baseline (member 0)"]["params"]
    sweep = res["temperature_sweep"]
    assert list(sweep) == ["hard targets only (member 0)", "T=1", "T=2"]
    assert [k for k, r in sweep.items() if r["chosen"]] == [f"T={chosen[-1]}"]
    assert all(r["test_yesno_wer"] is not None for r in sweep.values())
    # section 6: 30% of the files by frames, hard and soft targets, with training-set accuracy
    subset = read_table(recipe / "data/train_yesno_30pct/utt2spk")
    assert 8 <= len(subset) <= 10
    assert list(res["section6"]) == ["100% of train, hard targets (member 0)", "subset, hard targets",
                                     "subset, soft targets", SUBSET_MIXUP]
    assert all(r["train_frame_acc"] > 50 for r in res["section6"].values())
    assert set(res["section6_recovered"]) == {"subset, soft targets", SUBSET_MIXUP}
    variants = res["ensemble_variants"]
    assert variants["test_yesno"]["geometric"] > 50 and list(variants["test_yesno"]["size_curve"]) == ["1", "2"]
    assert variants["teacher_switching"]["switched"]["test_yesno_frame_acc"] > 50
    assert res["per_member_soft_targets"] == 2 and set(res["soft_targets"]) == {"soft_T1", "soft_T2"}
    assert set(res["stage_seconds"]) >= {str(k) for k in range(10, 17)}
    check_significance(res, [student, mixed])
    md = (recipe / "exp/compare/results.md").read_text()
    for heading in ("| distilled (T=", "## Significance", "## Temperature sweep", "## Soft targets as a regulariser", "## Ensemble variants",
                    "Teacher switching", "## Seeds", "## Time per stage"):
        assert heading in md, heading
    for png in ("wer", "dev_frame_accuracy", "section6", "ensemble_size"):
        assert (recipe / f"exp/compare/{png}.png").stat().st_size > 0
    check_compare_reports_what_exists(recipe, tmp_path / "compare")
    check_seed_spread(recipe)
    check_second_config(recipe, tmp_path)
    stamp = (recipe / "exp/tri/decode_test_yesno/decode_info.json").stat().st_mtime_ns
    proc = run_recipe(recipe, "--stage", "9", "--corpus-dir", str(YESNO))
    assert proc.returncode == 0, proc.stderr
    assert (recipe / "exp/tri/decode_test_yesno/decode_info.json").stat().st_mtime_ns == stamp

    proc = run_recipe(recipe, "--no-such-option", "1")
    assert proc.returncode != 0 and "unknown option --no-such-option" in proc.stderr
    # bad options are errors, and so is a corpus other than the one data/ came from
    for args, msg in ((["--stage", "foo"], "--stage must be a non-negative integer, got 'foo'"),
                      (["--stage", "5", "--stop-stage", "2"], "nothing to run"),
                      (["--nj", "0"], "--nj must be at least 1"),
                      (["--corpus-dir", str(tmp_path)], "data/ was prepared with --corpus-dir"),
                      (["--nnet-config", "nope.yaml"], f"--nnet-config {tmp_path}/nope.yaml: no such file")):
        proc = run_recipe(recipe, *args, cwd=tmp_path)
        assert proc.returncode != 0 and msg in proc.stderr, proc.stderr
    # a relative --corpus-dir is the caller's; a second run of the recipe at once is refused
    proc = run_recipe(recipe, "--stop-stage", "0", "--corpus-dir", os.path.relpath(YESNO, tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    holder = subprocess.Popen(["flock", str(recipe / "exp/.run.lock"), "sleep", "60"])
    try:
        while subprocess.run(["flock", "-n", str(recipe / "exp/.run.lock"), "true"]).returncode == 0:
            time.sleep(0.1)  # until the holder has the lock
        proc = run_recipe(recipe, "--stop-stage", "0")
        assert proc.returncode != 0 and "this recipe is already running" in proc.stderr, proc.stderr
    finally:
        holder.kill()
        holder.wait()


def test_choose_gmm_takes_the_lowest_tuning_wer(tmp_path):
    """--nnet-gmm auto: the triphone system with the lowest tuning-set WER, the first of those
    tied, reported in exp/nnet_gmm.txt; a system not decoded yet is an error, and so is a new
    choice once the networks exist."""
    for m, wer in (("tri", "66.97"), ("tri2", "63.38"), ("tri3", "63.38")):
        (tmp_path / f"exp/{m}/decode_dev").mkdir(parents=True)
        (tmp_path / f"exp/{m}/decode_dev/wer").write_text(f"%WER {wer} [ 1 / 2, 0 ins, 0 del, 1 sub ]\n")

    def choose(*systems):
        script = (f'set -euo pipefail; ASRKD_SKIP_SETUP=1; . {ROOT}/recipes/utils/path.sh; cd {tmp_path}; '
                  f'choose_gmm dev {" ".join(systems)}')  # as run.sh runs it
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True)

    proc = choose("tri", "tri2", "tri3")
    assert proc.returncode == 0 and proc.stdout == "tri2\n", proc.stderr
    assert (tmp_path / "exp/nnet_gmm.txt").read_text().splitlines() == [
        "tri dev WER 66.97", "tri2 dev WER 63.38", "tri3 dev WER 63.38", "chosen: tri2 (lowest dev WER)"]
    assert choose("tri3", "tri").stdout == "tri3\n"
    proc = choose("tri", "tri4")
    assert proc.returncode != 0 and "no %WER in exp/tri4/decode_dev/wer" in proc.stderr
    # once the networks are trained on one choice, another is an error, not a silent switch
    (tmp_path / "exp/nnet_tdnn").mkdir()
    proc = choose("tri", "tri2")
    assert proc.returncode != 0 and "now chooses tri2, but exp/nnet_tdnn trained on tri3" in proc.stderr
    (tmp_path / "exp/nnet").mkdir()
    assert "but exp/nnet exp/nnet_tdnn trained on tri3" in choose("tri", "tri2").stderr
    assert choose("tri", "tri3").stdout == "tri3\n"


def test_stage_times_leave_out_a_stopped_stage(tmp_path):
    """exp/log/stage_times.tsv times a stage that finished, not one whose run was stopped."""
    script = f'ASRKD_SKIP_SETUP=1; . {ROOT}/recipes/utils/path.sh; cd {tmp_path}; begin_stage 3 x; begin_stage 4 y; '

    def timed():
        return [line.split()[0] for line in (tmp_path / "exp/log/stage_times.tsv").read_text().splitlines()]

    assert subprocess.run(["bash", "-c", script + "true"]).returncode == 0
    assert timed() == ["3", "4"]
    proc = subprocess.Popen(["bash", "-c", script + "sleep 0.5; begin_stage 5 z; sleep 60 & wait"])
    time.sleep(2)
    proc.terminate()
    assert proc.wait() == 143
    assert timed() == ["3", "4", "3", "4"]


@pytest.mark.parametrize("script", ["recipes/speechocean762/run.sh", "recipes/yesno/run.sh",
                                    "recipes/template/run.sh", "local/seed_spread.sh",
                                    "recipes/speechocean762/local/senone_inventory.sh"])
def test_help_lists_every_option_with_a_line_of_its_own(script, tmp_path):
    """--help lists each option the script accepts, with its default and what it does."""
    proc = run_script(ROOT / script, "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    options = [(i, ln.split()[0]) for i, ln in enumerate(lines) if ln.startswith("  --")]
    assert {"--stage", "--nj", "--force"} <= {o for _, o in options} or "local/" in script
    for i, name in options:
        assert i + 1 < len(lines) and lines[i + 1].startswith("      "), f"{script}: {name} has no help line"

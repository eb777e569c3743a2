"""The yesno recipe's parallel stages on a one-node Slurm (tools/slurm.sh): alignment, ensemble
members, soft targets, the temperature sweep and decoding with `--cmd slurm` give the same
alignments, models, soft targets and hypotheses as `--cmd local`."""

import shutil

import kaldiio
import numpy as np
import torch

from conftest import YESNO
from slurm_cluster import slurm_cluster  # noqa: F401
from test_recipe import copy_recipe, run_recipe


def recipe_run(recipe, *args):
    proc = run_recipe(recipe, "--corpus-dir", str(YESNO), "--section6", "false", "--beyond-paper", "false", "--threads", "1", *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def same_table(a, b):
    """Two Kaldi scp tables (of any writer) hold the same matrices."""
    ta, tb = kaldiio.load_scp(str(a)), kaldiio.load_scp(str(b))
    assert list(ta) == list(tb), a
    return all(np.array_equal(ta[k], tb[k]) for k in ta)


def test_slurm_jobs_match_local_jobs(slurm_cluster, tmp_path):
    """On a copy of a local run, alignment, members, soft targets, the sweep (one temperature)
    and decoding are redone with --cmd slurm. Leaving out what they do not need keeps the test
    short: tri2 and the GMMs' decoding (stage 9; the networks learn tri's senones) and the
    sweep's second temperature."""
    recipe = copy_recipe(tmp_path / "local")
    config = recipe / "conf/nnet.yaml"
    config.write_text(config.read_text().replace("temperatures: [1.0, 2.0]", "temperatures: [2.0]"))
    recipe_run(recipe, "--stop-stage", "8", "--lda-mllt", "false")
    recipe_run(recipe, "--stage", "10", "--stop-stage", "12")
    recipe_run(recipe, "--stage", "16", "--stop-stage", "16")
    other = tmp_path / "slurm/recipes/yesno"
    shutil.copytree(recipe.parents[1], other.parents[1], symlinks=True)
    cmd_config = other / "conf/cmd.yaml"  # training jobs on one thread, as the local run's
    cmd_config.write_text(cmd_config.read_text().replace("  cpus_per_task: 2", "  cpus_per_task: 1"))
    shutil.rmtree(other / "exp/tri_ali")
    for d in ("member_0", "member_1", "soft_T2", "student_T2", "distilled"):
        (other / "exp/nnet" / d).unlink() if d == "distilled" else shutil.rmtree(other / "exp/nnet" / d)
    for d in ("ensemble", "student_mixup", "switched"):  # decodes whose models or tuning decode are redone
        for s in ("train_yesno", "test_yesno"):
            shutil.rmtree(other / "exp/nnet" / d / f"decode_{s}", ignore_errors=True)
    out = recipe_run(other, "--stage", "7", "--stop-stage", "7", "--cmd", "slurm", "--lda-mllt", "false")
    out += recipe_run(other, "--stage", "10", "--stop-stage", "12", "--cmd", "slurm")
    out += recipe_run(other, "--stage", "16", "--stop-stage", "16", "--cmd", "slurm")
    for step in ("align", "members", "soft_targets", "run-jobs", "decode"):
        assert f"{step}: " in out and "Slurm jobs submitted" in out, step
    assert same_table(recipe / "exp/tri_ali/ali.scp", other / "exp/tri_ali/ali.scp")
    assert not (recipe / "exp/nnet/student_T1").exists()
    for m in ("member_0", "member_1", "student_T2"):
        a, b = (torch.load(r / "exp/nnet" / m / "final.pt", weights_only=False)["model"] for r in (recipe, other))
        assert all(torch.equal(a[k], b[k]) for k in a), m
    for f in ("probs.scp", "ids.scp"):
        assert same_table(recipe / "exp/nnet/soft_T2" / f, other / "exp/nnet/soft_T2" / f)
    assert (recipe / "exp/nnet/distilled").resolve().name == (other / "exp/nnet/distilled").resolve().name
    for d in ("member_0", "ensemble", "distilled"):
        for s in ("train_yesno", "test_yesno"):
            for f in ("text", "wer", "best_lmwt"):
                a, b = (r / "exp/nnet" / d / f"decode_{s}" / f for r in (recipe, other))
                assert a.read_text() == b.read_text(), (d, s, f)

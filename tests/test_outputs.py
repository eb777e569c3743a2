"""Outputs are never written over what a command did not make, never reused when made with
other options or inputs, replaced crash-safely, and written by one process at a time."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from asrkd.data import read_table, subset_data_dir, write_table
from asrkd.decode.graph import make_graph
from asrkd.hmm.train import train_mono
from asrkd.nnet.config import NnetConfig
from asrkd.nnet.train import train_model
from asrkd.outputs import Output, read_record
from asrkd.utils import AsrkdError
from conftest import ROOT
from test_reliability import cli_error

TINY = NnetConfig(hidden=16, layers=1, dropout=0.0, batch_size=512, max_epochs=1, precision="fp32")


def test_foreign_paths_are_never_replaced(tmp_path):
    mine = tmp_path / "model"
    mine.mkdir()
    (mine / "final.pt").write_bytes(b"the user's model")
    for force in (False, True):
        with pytest.raises(AsrkdError, match="was not written by `asrkd make-graph`"):
            Output(mine, "make-graph").done(force)
        with pytest.raises(AsrkdError, match="was not written by"):
            with Output(mine, "make-graph").writing():
                pass
    other = Output(tmp_path / "lang", "prepare-lang")
    with other.writing() as d:
        (d / "x").write_text("1")
    with pytest.raises(AsrkdError, match="written by `asrkd prepare-lang`, not `asrkd make-graph`"):
        Output(tmp_path / "lang", "make-graph").done(True)
    assert (mine / "final.pt").read_bytes() == b"the user's model" and (tmp_path / "lang/x").is_file()


def test_other_options_or_inputs_are_refused_and_force_replaces(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("a")
    out = Output(tmp_path / "out", "cmd", {"order": 3}, {"text": src})
    assert not out.done()
    with out.writing() as d:
        (d / "result").write_text("3")
    assert Output(tmp_path / "out", "cmd", {"order": 3}, {"text": src}).done()
    with pytest.raises(AsrkdError, match=r"made with order=3 \(now 4\); rerun with --force"):
        Output(tmp_path / "out", "cmd", {"order": 4}, {"text": src}).done()
    src.write_text("b")
    with pytest.raises(AsrkdError, match="made with another text"):
        Output(tmp_path / "out", "cmd", {"order": 3}, {"text": src}).done()
    # --force: the old output is kept aside while the new one is made, and removed after
    new = Output(tmp_path / "out", "cmd", {"order": 4}, {"text": src})
    assert not new.done(force=True)
    assert (tmp_path / ".out.old/result").read_text() == "3" and read_record(tmp_path / ".out.old") is not None
    with new.writing() as d:
        (d / "result").write_text("4")
    assert (tmp_path / "out/result").read_text() == "4" and not (tmp_path / ".out.old").exists()
    assert read_record(tmp_path / "out")["options"] == {"order": 4}


def test_killed_forced_retraining_is_not_taken_for_finished(yesno, tmp_path, monkeypatch):
    """A killed `--force` retraining leaves an unfinished output (the old model aside), which the
    rerun trains again: the old final.pt never passes for the new options' model."""
    args = (yesno / "train_yesno", yesno / "lang")
    train_mono(*args, tmp_path / "mono", num_iters=2, tot_gauss=20)
    import asrkd.hmm.train as hmm_train

    def killed(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(hmm_train, "train_gmm", killed)
    with pytest.raises(KeyboardInterrupt):
        train_mono(*args, tmp_path / "mono", num_iters=2, tot_gauss=30, force=True)
    monkeypatch.undo()
    assert not (tmp_path / "mono/final.pt").exists() and (tmp_path / ".mono.old/final.pt").is_file()
    assert read_record(tmp_path / "mono")["finished"] is False
    train_mono(*args, tmp_path / "mono", num_iters=2, tot_gauss=30)
    record = read_record(tmp_path / "mono")
    assert record["finished"] and record["options"] == {"num_iters": 2, "tot_gauss": 30, "seed": 0}
    assert (tmp_path / "mono/final.pt").is_file() and not (tmp_path / ".mono.old").exists()


def test_cli_outputs_never_overwrite_a_model(yesno, yesno_mono, tmp_path, caplog):
    model = tmp_path / "mono"
    shutil.copytree(yesno_mono / "mono", model)
    before = (model / "final.pt").read_bytes()
    (model / ".asrkd.json").unlink()  # as a model the user made or copied from elsewhere
    err = cli_error(caplog, "make-graph", yesno / "lang_test", yesno_mono / "mono", model)
    assert "was not written by `asrkd make-graph`" in err
    make_graph(yesno / "lang_test", yesno_mono / "mono", tmp_path / "graph")
    err = cli_error(caplog, "decode", "--model-dir", yesno_mono / "mono", tmp_path / "graph", yesno / "test_yesno",
                    model)
    assert "was not written by `asrkd decode`" in err and (model / "final.pt").read_bytes() == before


def test_changed_options_are_errors_not_skips(yesno, yesno_mono, tmp_path, caplog, monkeypatch):
    """train-lm with another order and train-mono with another Gaussian count used to log
    "exists, skipping" and keep the old result."""
    lm = ["train-lm", "--text", yesno / "train_yesno/text", "--lang", yesno / "lang", "--lm-dir", tmp_path / "lm",
          "--lang-test", tmp_path / "lang_test"]
    from asrkd.cli import main
    main(list(map(str, lm + ["--order", "1"])))
    assert "order=1 (now 2)" in cli_error(caplog, *lm, "--order", "2")
    main(list(map(str, lm + ["--order", "2", "--force"])))
    assert read_record(tmp_path / "lang_test")["options"] == {"order": 2}
    mono = ["train-mono", "--num-iters", "2", yesno / "train_yesno", yesno / "lang", tmp_path / "mono"]
    main(list(map(str, mono + ["--tot-gauss", "20"])))
    assert "tot_gauss=20 (now 30)" in cli_error(caplog, *mono, "--tot-gauss", "30")
    monkeypatch.setenv("ASRKD_FORCE", "1")  # what `run.sh --force true` sets
    main(list(map(str, mono + ["--tot-gauss", "30"])))
    assert read_record(tmp_path / "mono")["options"]["tot_gauss"] == 30


def test_changed_dev_set_is_not_resumed_over(yesno, yesno_mono, tmp_path):
    train, ali = yesno / "train_yesno", yesno_mono / "mono_ali"
    train_model(TINY, train, ali, train, ali, tmp_path / "dnn", device="cpu")
    dev = tmp_path / "dev"
    subset_data_dir(train, dev, first=10)
    with pytest.raises(AsrkdError, match="made with another dev"):
        train_model(TINY, train, ali, dev, ali, tmp_path / "dnn", device="cpu")
    with pytest.raises(AsrkdError, match=r"made with hidden=16 \(now 8\)"):
        train_model(dataclasses.replace(TINY, hidden=8), train, ali, train, ali, tmp_path / "dnn", device="cpu")


def test_data_dir_destination_is_distinct_and_written_whole(small_dir, tmp_path, caplog):
    wav = (small_dir / "wav.scp").read_text()
    assert "destination is the source" in cli_error(caplog, "subset-data-dir", "--first", 3, small_dir, small_dir)
    (tmp_path / "link").symlink_to(small_dir)
    assert "destination is the source" in cli_error(caplog, "subset-data-dir", "--first", 3, small_dir,
                                                    tmp_path / "link")
    assert "destination is the source" in cli_error(caplog, "combine-data-dirs", tmp_path / "link", small_dir)
    assert (small_dir / "wav.scp").read_text() == wav
    dest = tmp_path / "sub"
    subset_data_dir(small_dir, dest, first=4)
    write_table(dest / "cmvn.scp", {"spk": "stale.ark:1"})  # stats of the 4-utterance subset
    with pytest.raises(AsrkdError, match=r"made with first=4 \(now 2\)"):
        subset_data_dir(small_dir, dest, first=2)
    assert subset_data_dir(small_dir, dest, first=2, force=True) == sorted(read_table(dest / "utt2spk"))
    assert len(read_table(dest / "utt2spk")) == 2 and not (dest / "cmvn.scp").exists()


def test_one_writer_at_a_time(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from asrkd.outputs import Output; "
        "Output(sys.argv[2], 'make-soft-targets').lock(); print('locked', flush=True); time.sleep(60)"),
        str(ROOT), str(tmp_path / "soft_T2")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(AsrkdError, match=f"already being written by pid {holder.pid}"):
            Output(tmp_path / "soft_T2", "make-soft-targets").done()
    finally:
        holder.kill()
        holder.wait()
    out = Output(tmp_path / "soft_T2", "make-soft-targets")  # a dead writer's lock is taken over
    assert not out.done()
    out.unlock()


def test_corrupt_outputs_give_one_line_errors(yesno, yesno_mono, tmp_path, caplog):
    from asrkd.checkpoint import load_checkpoint
    from asrkd.nnet.model import load_nnet
    from asrkd.nnet.soft_targets import SoftTargets, make_soft_targets

    train, ali = yesno / "train_yesno", yesno_mono / "mono_ali"
    train_model(TINY, train, ali, train, ali, tmp_path / "dnn", device="cpu")
    make_soft_targets([load_nnet(tmp_path / "dnn")], train, {2.0: tmp_path / "soft_T2"}, k=4)
    (tmp_path / "dnn/log/train.json").write_text("[{")
    with pytest.raises(AsrkdError, match="train.json: unreadable"):
        train_model(TINY, train, ali, train, ali, tmp_path / "dnn", device="cpu")
    ark = tmp_path / "soft_T2/probs.1.ark"
    ark.write_bytes(ark.read_bytes()[:100])
    soft = SoftTargets(tmp_path / "soft_T2")
    with pytest.raises(AsrkdError, match="unreadable"):
        for u in soft.ids:
            soft.read(u, len(soft.ids[u]))
    (tmp_path / "soft_T2/info.json").write_text('{"temperature": 2}')
    with pytest.raises(AsrkdError, match="info.json: corrupt"):
        SoftTargets(tmp_path / "soft_T2")
    (tmp_path / "random.pt").write_bytes(os.urandom(4096))
    with pytest.raises(AsrkdError, match="not a readable asrkd checkpoint"):
        load_checkpoint(tmp_path / "random.pt")
    with pytest.raises(AsrkdError, match="top_k=40 is more than the models' 16 senones"):
        make_soft_targets([load_nnet(tmp_path / "dnn")], train, {2.0: tmp_path / "soft_k40"}, k=40)
    assert "no CUDA" in cli_error(caplog, "train-dnn", "--device", "cuda", train, ali, train, ali, tmp_path / "gpu")
    assert not (tmp_path / "gpu").exists()


def test_out_of_range_options_name_the_key(tmp_path):
    for key, value in (("temperature", 0.0), ("hard_weight", 1.5), ("learning_rate", -1e-3), ("left_context", -1),
                       ("max_halvings", -1)):
        extra = {"temperatures": [value]} if key == "temperature" else {}
        with pytest.raises(AsrkdError, match=f"^{key} must be in"):
            NnetConfig(**{key: value, **extra})


def test_force_keeps_the_outputs_nested_in_a_model_dir(yesno, tmp_path):
    """Retraining a model with --force replaces the model, not the graph and decodes that other
    commands made inside its dir; those now name another model and are refused until redone."""
    args = (yesno / "train_yesno", yesno / "lang")
    train_mono(*args, tmp_path / "mono", num_iters=2, tot_gauss=20)
    make_graph(yesno / "lang_test", tmp_path / "mono", tmp_path / "mono/graph")
    (tmp_path / "mono/notes.txt").write_text("kept aside with the old model")
    train_mono(*args, tmp_path / "mono", num_iters=2, tot_gauss=30, force=True)
    assert (tmp_path / "mono/graph/HCLG.fst").is_file() and not (tmp_path / "mono/notes.txt").exists()
    with pytest.raises(AsrkdError, match="made with another model"):
        make_graph(yesno / "lang_test", tmp_path / "mono", tmp_path / "mono/graph")
    make_graph(yesno / "lang_test", tmp_path / "mono", tmp_path / "mono/graph", force=True)
    assert read_record(tmp_path / "mono/graph")["finished"] and not (tmp_path / "mono/.graph.old").exists()


def test_an_input_more_or_less_is_a_difference(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("1")
    b.write_text("2")
    out = Output(tmp_path / "out", "cmd", {}, {"teacher_0": a, "teacher_1": b})
    assert not out.done()
    with out.writing() as d:
        (d / "x").write_text("y")
    with pytest.raises(AsrkdError, match=r"made with a teacher_1 \(now none\)"):
        Output(tmp_path / "out", "cmd", {}, {"teacher_0": a}).done()
    with pytest.raises(AsrkdError, match=r"made with no teacher_2 \(now one\)"):
        Output(tmp_path / "out", "cmd", {}, {"teacher_0": a, "teacher_1": b, "teacher_2": a}).done()


def test_models_and_graphs_of_other_senone_sets_are_refused(yesno, yesno_mono, tmp_path, caplog):
    """A model decoded on a graph of another tree, or scored against an alignment of another
    tree, used to exit 0 with a number."""
    train, data = yesno / "train_yesno", yesno / "test_yesno"
    train_mono(train, yesno / "lang", tmp_path / "mono", num_iters=2, tot_gauss=20)
    make_graph(yesno / "lang_test", tmp_path / "mono", tmp_path / "graph")
    info = json.loads((tmp_path / "graph/graph_info.json").read_text())
    (tmp_path / "graph/graph_info.json").write_text(json.dumps(info | {"num_pdfs": info["num_pdfs"] + 4}))
    err = cli_error(caplog, "decode", "--model-dir", tmp_path / "mono", tmp_path / "graph", data, tmp_path / "d")
    assert f"a graph over {info['num_pdfs'] + 4} senones, the model has {info['num_pdfs']}" in err
    (tmp_path / "graph/graph_info.json").write_text(json.dumps(info))
    (tmp_path / "graph/tree").write_bytes((tmp_path / "graph/tree").read_bytes() + b" ")
    err = cli_error(caplog, "decode", "--model-dir", tmp_path / "mono", tmp_path / "graph", data, tmp_path / "d")
    assert "built from another tree than the model's" in err
    ali = tmp_path / "ali"
    shutil.copytree(yesno_mono / "mono_ali", ali)
    (ali / "tree").write_bytes((ali / "tree").read_bytes() + b" ")
    err = cli_error(caplog, "frame-accuracy", "--model-dir", tmp_path / "mono", train, ali, tmp_path / "fa.json")
    assert "aligned with another tree" in err and not (tmp_path / "fa.json").exists()

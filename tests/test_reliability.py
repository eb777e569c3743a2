"""Bad input and killed runs give one-line errors or listed skips, never lost work
or silently wrong results. The comment above each test names its case."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch

import asrkd.features
from asrkd.cli import main
from asrkd.data import combine_data_dirs, read_table, validate_data_dir, write_table
from asrkd.decode.score import score
from asrkd.features import FbankConfig, compute_cmvn_stats_dir, compute_fbank_dir
from asrkd.hmm.alignment import AlignmentDir
from asrkd.hmm.gmm import DiagGmmSet
from asrkd.hmm.train import train_mono
from asrkd.utils import AsrkdError
from conftest import ROOT, so762_subset


def load_all(data_dir):
    return {u: kaldiio.load_mat(r) for u, r in read_table(data_dir / "feats.scp").items()}


def cli_error(caplog, *argv) -> str:
    """Run the CLI in-process; it must exit 1 with exactly one error line, which is returned."""
    caplog.clear()
    with pytest.raises(SystemExit) as e:
        main(list(map(str, argv)))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert e.value.code == 1 and len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


# 1. a --force run killed before it switches leaves the old features intact; the rerun reuses its jobs
def test_killed_forced_fbank_keeps_old_features(small_dir, monkeypatch, caplog):
    cfg = FbankConfig(dither=0.0)
    compute_fbank_dir(small_dir, cfg, nj=2)
    before = load_all(small_dir)
    write_table_ = asrkd.features.write_table

    def killed_at_switch(path, table):
        if path.name == "feats.scp":
            raise KeyboardInterrupt
        write_table_(path, table)

    monkeypatch.setattr(asrkd.features, "write_table", killed_at_switch)
    with pytest.raises(KeyboardInterrupt):
        compute_fbank_dir(small_dir, cfg, nj=2, force=True)
    monkeypatch.setattr(asrkd.features, "write_table", write_table_)
    after_kill = load_all(small_dir)
    assert after_kill.keys() == before.keys() and all(np.array_equal(before[u], after_kill[u]) for u in before)
    caplog.set_level(logging.INFO)
    compute_fbank_dir(small_dir, cfg, nj=2, force=True)
    assert caplog.text.count("already finished, reusing it") == 2
    new = load_all(small_dir)
    assert all(np.array_equal(before[u], new[u]) for u in before)
    assert len(list((small_dir / "data").glob("fbank_*"))) == 1  # the superseded arks are gone


def test_cmvn_and_alignment_rewrites_switch_atomically(small_dir, tmp_path):
    compute_fbank_dir(small_dir, FbankConfig(dither=0.0))
    compute_cmvn_stats_dir(small_dir)
    old = dict(kaldiio.load_scp(str(small_dir / "cmvn.scp")))
    compute_cmvn_stats_dir(small_dir, force=True)
    assert len(list((small_dir / "data").glob("cmvn.*.ark"))) == 1
    new = kaldiio.load_scp(str(small_dir / "cmvn.scp"))
    assert all(np.array_equal(old[s], new[s]) for s in old)
    ali = {"a": np.array([0, 1, 1]), "b": np.array([2])}
    AlignmentDir.write(tmp_path / "ali", ali, 3, [], [], {})
    assert AlignmentDir(tmp_path / "ali").num_pdfs == 3
    (tmp_path / "ali" / "align_report.json").unlink()  # what a rewrite killed midway leaves
    with pytest.raises(AsrkdError, match="align_report.json: missing, the alignment is incomplete"):
        AlignmentDir(tmp_path / "ali")


# 2. skipped audio never edits the user's tables; restored audio comes back
def test_skipped_audio_keeps_source_tables(small_dir):
    wav = read_table(small_dir / "wav.scp")
    bad, good = list(wav)[1], wav[list(wav)[1]]
    text = (small_dir / "text").read_text()
    write_table(small_dir / "wav.scp", wav | {bad: str(small_dir / "missing.wav")})
    summary = compute_fbank_dir(small_dir, FbankConfig(dither=0.0), max_skipped=0.5)
    assert summary["skipped"] == 1 and bad not in read_table(small_dir / "feats.scp")
    assert (small_dir / "text").read_text() == text and not (small_dir / ".backup").exists()
    compute_cmvn_stats_dir(small_dir)  # its speaker's stats come from the other utterances
    write_table(small_dir / "wav.scp", wav | {bad: good})
    compute_fbank_dir(small_dir, FbankConfig(dither=0.0), force=True)
    assert bad in read_table(small_dir / "feats.scp")


# 3. nothing usable, or too much skipped, is an error; so is scoring zero words
def test_no_usable_audio_is_an_error(small_dir, tmp_path):
    wav = read_table(small_dir / "wav.scp")
    write_table(small_dir / "wav.scp", {u: f"cat {v} |" for u, v in wav.items()})
    with pytest.raises(AsrkdError, match=r"6 of 6 utterances have no features .*pipe command"):
        compute_fbank_dir(small_dir, FbankConfig())
    assert not (small_dir / "feats.scp").exists()
    write_table(small_dir / "wav.scp", wav | {list(wav)[0]: "/nope.wav"})
    with pytest.raises(AsrkdError, match=r"1 of 6 utterances have no features \(more than 5%\)"):
        compute_fbank_dir(small_dir, FbankConfig())
    write_table(tmp_path / "hyp", {})
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "text").write_text("")
    with pytest.raises(AsrkdError, match="no reference words to score"):
        score(empty, tmp_path / "hyp", tmp_path / "out")


# 4. a non-finite utterance is named, not averaged into its speaker's CMVN stats
def test_non_finite_features_are_named_at_cmvn(small_dir):
    compute_fbank_dir(small_dir, FbankConfig(dither=0.0))
    feats = {u: x.copy() for u, x in load_all(small_dir).items()}
    utt = list(feats)[2]
    feats[utt][5, 3] = np.nan
    kaldiio.save_ark(str(small_dir / "nan.ark"), feats, scp=str(small_dir / "feats.scp"))
    with pytest.raises(AsrkdError, match=f"utterance '{utt}' has non-finite features \\(1 frames\\)"):
        compute_cmvn_stats_dir(small_dir, force=True)
    (small_dir / "nan.ark").write_bytes(b"garbage")  # 8. corrupt arks: a one-line error, not an assert
    with pytest.raises(AsrkdError, match="cannot read"):
        compute_cmvn_stats_dir(small_dir, force=True)


# 5. GMM training resumes only under the same options: tests/test_hmm.py (killed training)


# 7. compute-fbank's workers die with it (kill -9)
def test_fbank_workers_die_with_parent(tmp_path):
    data = so762_subset(tmp_path / "many", speakers=8, per_spk=25)
    proc = subprocess.Popen([sys.executable, "-m", "asrkd.cli", "compute-fbank", "--nj", "2", str(data)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    for _ in range(600):  # until both workers run (at most a minute)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        workers = children.read_text().split() if children.exists() else []
        if len(workers) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert len(workers) >= 2 and proc.poll() is None, "compute-fbank finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(100):
        alive = [w for w in workers if os.path.exists(f"/proc/{w}") and "Z" not in _state(w)]
        if not alive:
            break
        time.sleep(0.1)
    assert not alive


def _state(pid: str) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().split(")")[1].split()[0]
    except OSError:
        return "Z"


# 8. one-line errors
def test_one_line_errors(small_dir, tmp_path, caplog):
    (small_dir / "wav.scp").write_bytes((small_dir / "wav.scp").read_bytes() + b"x\xff\xfe bad.wav\n")
    assert "wav.scp:7: not UTF-8" in cli_error(caplog, "compute-fbank", small_dir)
    assert not (small_dir / "feats.scp").exists()
    assert "nope: no such file" in cli_error(caplog, "train-mono", small_dir, tmp_path / "nope", tmp_path / "exp")
    assert "nope.yaml" in cli_error(caplog, "compute-fbank", "--config", tmp_path / "nope.yaml", small_dir)
    assert "list.txt" in cli_error(caplog, "subset-data-dir", "--utt-list", tmp_path / "list.txt", small_dir,
                                   tmp_path / "sub")
    (tmp_path / "file").write_text("")
    write_table(tmp_path / "hyp", {"a": "b"})
    assert "file" in cli_error(caplog, "score", small_dir, tmp_path / "hyp", tmp_path / "file" / "out")
    (tmp_path / "nnet").mkdir()
    (tmp_path / "nnet" / "final.pt").write_bytes(b"\x80\x02corrupt")
    msg = cli_error(caplog, "nnet-forward", "--nnet", tmp_path / "nnet", small_dir, tmp_path / "post")
    assert "final.pt" in msg and "weights_only" not in msg


# 9. inputs are checked before outputs are created; Kaldi's data dir checks
def test_inputs_checked_first_and_validation(small_dir, tmp_path, caplog):
    assert "wav.scp: no such file" in cli_error(caplog, "compute-fbank", tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
    with pytest.raises(AsrkdError, match="not a data dir"):
        combine_data_dirs(tmp_path / "both", [small_dir, tmp_path / "missing"])
    wav = read_table(small_dir / "wav.scp")
    utt = list(wav)[0]
    sf.write(tmp_path / "one.wav", np.zeros(1, dtype=np.float32), 16000)
    write_table(small_dir / "wav.scp", wav | {utt: str(tmp_path / "one.wav")})
    assert any("1 samples, shorter than one 25 ms frame" in e for e in validate_data_dir(small_dir))
    utt2spk = read_table(small_dir / "utt2spk")
    spks = sorted(set(utt2spk.values()))
    swapped = {u: spks[1] if s == spks[0] else spks[0] for u, s in utt2spk.items()}
    write_table(small_dir / "utt2spk", swapped)
    write_table(small_dir / "spk2utt", {s: " ".join(u for u in swapped if swapped[u] == s) for s in spks})
    assert any("not sorted by speaker" in e for e in validate_data_dir(small_dir, check_audio=False))
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("wav.scp", "text", "utt2spk", "spk2utt"):
        (empty / name).write_text("")
    assert validate_data_dir(empty) == [f"{empty / 'utt2spk'}: no utterances (empty data dir)"]


def test_mono_lists_empty_transcripts_and_keeps_tot_gauss(yesno, tmp_path):
    data = tmp_path / "data"
    combine_data_dirs(data, [yesno / "train_yesno"])
    for name in ("feats.scp", "cmvn.scp"):
        (data / name).write_text((yesno / "train_yesno" / name).read_text())
    text = read_table(data / "text")
    empty = list(text)[3]
    write_table(data / "text", text | {empty: ""})
    with pytest.raises(AsrkdError, match=r"--tot-gauss 5 is below the number of pdfs \(16\)"):
        train_mono(data, yesno / "lang", tmp_path / "few", num_iters=2, tot_gauss=5)
    history = train_mono(data, yesno / "lang", tmp_path / "mono", num_iters=4, tot_gauss=37)
    assert (tmp_path / "mono/log/skipped.txt").read_text() == f"{empty} empty transcript\n"
    assert max(h["num_gauss"] for h in history) <= 37
    assert json.loads((tmp_path / "mono/log/train.json").read_text())


def test_mix_up_never_passes_target():
    for pdfs, target in ((16, 37), (151, 160), (40, 41)):
        gmm = DiagGmmSet.single(torch.zeros(3), torch.ones(3), pdfs)
        occ = torch.rand(pdfs, generator=torch.Generator().manual_seed(pdfs)) * 100
        gmm.mix_up(target, occ)
        assert pdfs <= gmm.num_gauss() <= target


def test_alignment_works_from_any_directory_and_needs_no_priors(yesno, yesno_mono, tmp_path, caplog, monkeypatch):
    """ali.scp holds absolute paths (as Kaldi's); frame-accuracy of a neural model needs no
    priors (argmax of the posterior); --threads reaches torch."""
    from asrkd.nnet.config import NnetConfig
    from asrkd.nnet.train import train_model

    from asrkd.hmm.align import align

    monkeypatch.chdir(tmp_path)
    align(yesno / "train_yesno", yesno / "lang", yesno_mono / "mono", "ali")  # a relative output dir
    for entry in read_table(tmp_path / "ali/ali.scp").values():
        assert Path(entry.rsplit(":", 1)[0]).is_absolute()
    monkeypatch.chdir(yesno)
    assert len(AlignmentDir(tmp_path / "ali").ali) == 30
    cfg = NnetConfig(hidden=16, layers=1, max_epochs=1, precision="fp32")
    data, ali = yesno / "train_yesno", yesno_mono / "mono_ali"
    train_model(cfg, data, ali, data, ali, tmp_path / "dnn", device="cpu")
    main(list(map(str, ["frame-accuracy", "--nnet", tmp_path / "dnn", data, ali, tmp_path / "fa.json"])))
    fa = json.loads((tmp_path / "fa.json").read_text())
    assert fa["frames"] > 0 and fa["environment"]["asrkd_commit"]
    env = subprocess.run([sys.executable, "-m", "asrkd.cli", "--threads", "1", "env"], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    assert json.loads(env.stdout)["threads"] == 1


def test_decode_with_too_many_skipped_utterances_is_an_error(yesno, yesno_mono, tmp_path):
    """NaN scores for every utterance used to give exit 0 and WER 100."""
    from asrkd.decode.decoder import GmmScorer, decode
    from asrkd.decode.graph import make_graph

    class NanScorer(GmmScorer):
        def __call__(self, utt):
            return np.full_like(super().__call__(utt), np.nan)

    make_graph(yesno / "lang_test", yesno_mono / "mono", tmp_path / "graph")
    data = yesno / "test_yesno"
    with pytest.raises(AsrkdError, match=r"30 of 30 utterances skipped \(more than 5%\)"):
        decode(tmp_path / "graph", NanScorer(yesno_mono / "mono", data), data, tmp_path / "decode", lm_weights=[1.0])
    assert len((tmp_path / "decode/log/skipped.txt").read_text().splitlines()) == 30
    assert not (tmp_path / "decode/decode_info.json").exists()

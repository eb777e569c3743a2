"""Training frames streamed from the archives through a shuffle buffer: every frame once an
epoch, the in-memory frames' windows and targets, training as good as in memory,
reproducible and resumable, memory set by the buffer; the automatic choice of the path."""

import dataclasses
import logging
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import asrkd.nnet.stream as stream
from asrkd.data import read_table
from asrkd.hmm.alignment import AlignmentDir
from asrkd.nnet.config import NnetConfig
from asrkd.nnet.data import FrameSet, load_frames
from asrkd.nnet.model import load_nnet
from asrkd.nnet.stream import FrameStream, choose_train_data, rank_batch_sizes
from asrkd.nnet.train import load_sets, model_output, train_dnn
from asrkd.utils import AsrkdError
from test_nnet import train_killed_after_first_epoch

TINY = NnetConfig(hidden=32, layers=2, dropout=0.1, batch_size=256, max_epochs=3, precision="fp32",
                  temperatures=[1.0, 2.0], top_k=4, temperature=2.0)


@pytest.fixture(scope="module")
def sets(yesno, yesno_mono):
    ali = AlignmentDir(yesno_mono / "mono_ali")
    return load_frames(yesno / "train_yesno", ali), FrameStream(yesno / "train_yesno", ali, buffer_frames=3000)


def replicate(data: Path, ali: Path, out: Path, times: int) -> tuple[Path, Path]:
    """A data dir and alignment dir with every utterance `times` times, pointing into the same arks."""
    d, a = out / "data", out / "ali"
    d.mkdir(parents=True)
    a.mkdir(parents=True)
    tables = {n: read_table(data / n) for n in ("feats.scp", "utt2spk", "utt2num_frames")}
    alis = read_table(ali / "ali.scp")
    keys = [(f"r{k:03d}_{u}", u) for k in range(times) for u in tables["feats.scp"]]
    for name, table in tables.items():
        (d / name).write_text("".join(f"{n} {table[u]}\n" for n, u in keys))
    shutil.copy(data / "cmvn.scp", d / "cmvn.scp")
    (a / "ali.scp").write_text("".join(f"{n} {alis[u]}\n" for n, u in keys if u in alis))
    for f in ("pdf_counts", "priors", "align_report.json"):
        shutil.copy(ali / f, a / f)
    return d, a


def test_every_frame_once_an_epoch_as_in_memory(sets):
    ram, streamed = sets
    assert len(streamed) == len(ram) and streamed.feat_dim == ram.feat_dim
    where = {u: i for i, u in enumerate(ram.utts)}
    assert rank_batch_sizes(len(ram), len(ram), 256) == [256] * (len(ram) // 256) + [len(ram) % 256]
    for world in (1, 2, 3):
        seen, steps = [], []
        for rank in range(world):
            batches = list(streamed.epoch_batches(256, 5, 2, rank, world))
            steps.append(len(batches))
            for frames, idx in batches:
                assert len(frames) <= 3000 + 256 + 700  # a buffer, its left-over frames, an utterance
                u = np.searchsorted(frames.offsets, idx.numpy(), side="right") - 1
                at = torch.from_numpy(np.array([ram.offsets[where[frames.utts[k]]] for k in u]) + idx.numpy()
                                      - frames.offsets[u])
                assert torch.equal(frames.spliced(idx, 20, 5), ram.spliced(at, 20, 5))
                assert torch.equal(frames.targets[idx], ram.targets[at])
                seen.append(at)
        seen = torch.cat(seen)
        assert steps == [ram.num_steps(256)] * world  # every rank takes its part of each minibatch
        assert len(seen) == len(ram) and len(seen.unique()) == len(ram)  # each frame once, on one rank
    # more ranks than utterances: some read none, and take part in every step with no frames
    parts = [[len(i) for _, i in streamed.epoch_batches(256, 5, 2, rank, 40)] for rank in range(40)]
    assert {len(p) for p in parts} == {ram.num_steps(256)} and sum(map(sum, parts)) == len(ram)
    assert min(map(sum, parts)) == 0
    orders = [torch.cat([i for _, i in streamed.epoch_batches(256, seed, epoch)]) for seed, epoch in
              ((5, 2), (5, 2), (5, 3), (6, 2))]
    assert torch.equal(orders[0], orders[1]) and not torch.equal(orders[0], orders[2])
    assert not torch.equal(orders[0], orders[3])


def test_streamed_training_is_as_good_reproducible_and_resumes(yesno, yesno_mono, sets, tmp_path, monkeypatch):
    """Through a buffer of 8,000 of the 18,380 frames, the dev frame accuracy after 3 epochs is
    within 2 points of the in-memory run's (seeds 0-4: 0.6 to 1.7 points lower; with a buffer
    holding the whole set, as in memory: -0.4 to +0.5)."""
    ram = sets[0]
    streamed = FrameStream(yesno / "train_yesno", AlignmentDir(yesno_mono / "mono_ali"), buffer_frames=8000)
    in_ram = train_dnn(TINY, ram, ram, 16, tmp_path / "ram", seed=2)
    runs = [train_dnn(TINY, streamed, ram, 16, tmp_path / f"stream{i}", seed=2) for i in (1, 2)]
    assert len(in_ram) == len(runs[0]) == 3
    assert abs(in_ram[-1]["dev_frame_accuracy"] - runs[0][-1]["dev_frame_accuracy"]) < 0.02
    assert {h["train_data"] for h in in_ram} == {"ram"} and {h["train_data"] for h in runs[0]} == {"stream"}
    strip = [[{k: v for k, v in h.items() if "second" not in k} for h in hist] for hist in runs]
    assert strip[0] == strip[1]
    first = load_nnet(tmp_path / "stream1").state_dict()
    assert all(torch.equal(first[k], v) for k, v in load_nnet(tmp_path / "stream2").state_dict().items())
    # killed after epoch 1, it resumes to the same weights
    train_killed_after_first_epoch(monkeypatch, TINY, streamed, ram, 16, tmp_path / "killed", seed=2)
    train_dnn(TINY, streamed, ram, 16, tmp_path / "killed", seed=2)
    again = load_nnet(tmp_path / "killed").state_dict()
    assert all(torch.equal(first[k], v) for k, v in again.items())


def test_memory_is_the_buffer_not_the_corpus(yesno, yesno_mono, tmp_path, monkeypatch):
    """20 copies of yesno (about 370,000 frames, 59 MB of features): reading them into memory
    allocates at least that; an epoch streamed through a 10,000-frame buffer about 2 buffers."""
    data, ali = replicate(yesno / "train_yesno", yesno_mono / "mono_ali", tmp_path / "x20", 20)
    ali = AlignmentDir(ali)
    ali.ali  # the alignment's index, held by both paths
    built = []
    read = FrameStream.read
    monkeypatch.setattr(FrameStream, "read", lambda self, utts: built.append(len(b := read(self, utts))) or b)
    tracemalloc.start()
    try:
        streamed = FrameStream(data, ali, buffer_frames=10_000)
        for _ in streamed.epoch_batches(512, 0, 1):
            pass
        stream_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        frames = load_frames(data, ali)
        ram_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    full = frames.feats.numel() * frames.feats.element_size()
    assert len(frames) == len(streamed) > 350_000 and ram_peak > full
    assert max(built) < 10_000 + 512 + 700 and sum(built) >= len(streamed)
    assert stream_peak < 0.15 * full, (stream_peak, full)


def test_auto_streams_what_would_not_fit(yesno, yesno_mono, tmp_path, monkeypatch, caplog):
    data = yesno / "train_yesno"
    where, why = choose_train_data("auto", data, available=10**10)
    assert where == "ram" and "at most half of the 10.0 GB available" in why and "utt2num_frames" in why
    where, why = choose_train_data("auto", data, ranks=4, available=10**6)
    assert where == "stream" and "x 4 ranks), more than half of the 0.0 GB" in why
    assert choose_train_data("stream", data)[0] == "stream" and choose_train_data("ram", data)[0] == "ram"
    monkeypatch.setattr(stream, "available_memory", lambda: 10**6)
    caplog.set_level(logging.INFO)
    ali = yesno_mono / "mono_ali"
    train, *_ = load_sets(data, ali, data, ali, tmp_path / "exp", cfg=TINY)
    assert isinstance(train, FrameStream) and "training frames streamed (train_data auto" in caplog.text
    assert isinstance(load_sets(data, ali, data, ali, tmp_path / "exp")[0], FrameSet)  # no config: in memory
    # models recorded before the keys existed still match at their defaults
    assert "train_data" not in model_output(tmp_path / "m", TINY, 0, False).options
    streaming = dataclasses.replace(TINY, train_data="stream")
    assert model_output(tmp_path / "m", streaming, 0, False).options["train_data"] == "stream"
    with pytest.raises(AsrkdError, match="train_data must be one of auto, ram, stream, not 'disk'"):
        NnetConfig(train_data="disk")
    with pytest.raises(AsrkdError, match=r"shuffle_buffer must be in \[1, inf\)"):
        NnetConfig(shuffle_buffer=0)

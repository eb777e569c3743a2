"""Training frames that need not fit in memory: read from the archives during each epoch.

The utterances of a data dir are grouped by the ark file their features are in (the shards
compute-fbank wrote); an epoch reads every shard in file order (sequential reads) from a
seeded starting point, the shards interleaved, and passes the frames through a shuffle buffer:
utterances are read until it holds `buffer_frames` unused frames (or the data end), those
frames are shuffled and cut into minibatches, and the few frames left over (fewer than a
minibatch, of the last utterance or two read) start the next buffer. A buffer is a
`FrameSet` of whole utterances, so windows are spliced within the utterance as in memory;
targets come from the alignment and soft targets from their dirs by random access.

An epoch has as many minibatches of `batch_size` as the in-memory path (the last one
smaller), so the learning-rate schedule is the same. Under torchrun each rank reads a
disjoint, contiguous run of the epoch's utterance order holding about 1/N of the frames,
and its share of each minibatch. Every draw is seeded by (seed, epoch, rank): a run is
reproducible, and resumes at any epoch boundary. Memory: the buffer being trained on plus
the next one while it is read (about 2 x buffer_frames frames), whatever the corpus size.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from asrkd.data import read_table
from asrkd.features import FeatureReader, feature_kind
from asrkd.hmm.alignment import AlignmentDir
from asrkd.nnet.data import FrameSet, usable_utterances
from asrkd.nnet.runtime import derived_seed
from asrkd.nnet.soft_targets import SoftTargets
from asrkd.utils import AsrkdError

log = logging.getLogger(__name__)


def frame_counts(data_dir: str | Path, reader: FeatureReader, utts: list[str]) -> np.ndarray:
    """Frames of each of `utts`: from utt2num_frames (compute-fbank writes it), else by reading
    every utterance once."""
    table = Path(data_dir) / "utt2num_frames"
    counts = read_table(table) if table.is_file() else {}
    if all(u in counts for u in utts):
        try:
            return np.array([int(counts[u]) for u in utts], dtype=np.int64)
        except ValueError:
            raise AsrkdError(f"{table}: frame counts must be integers") from None
    log.warning("%s: no utt2num_frames for every utterance: reading each once to count its frames", data_dir)
    return np.array([len(reader[u]) for u in utts], dtype=np.int64)


def rank_batch_sizes(total: int, mine: int, batch_size: int) -> list[int]:
    """This rank's part of each minibatch of an epoch over `total` frames (ceil(total /
    batch_size) minibatches of `batch_size`, the last one smaller), when it holds `mine` of the
    frames: its cumulative share is mine/total of the minibatches' cumulative size, so it
    takes all its frames in the same number of steps (a single process: `mine` = `total`)."""
    steps = -(-total // batch_size)
    cum = [mine * min(k * batch_size, total) // total for k in range(steps + 1)]
    return [b - a for a, b in zip(cum, cum[1:])]


class FrameStream:
    """The training frames of `data_dir` with an alignment (and soft targets in every dir of
    `soft`), read epoch by epoch through a shuffle buffer of `buffer_frames` frames."""

    def __init__(self, data_dir: str | Path, ali: AlignmentDir, soft: list[SoftTargets] = (),
                 buffer_frames: int = 500_000, skip_log: str | Path | None = None):
        self.path, self.kind = Path(data_dir), feature_kind(data_dir)
        self.reader = FeatureReader(data_dir, cmvn=True)
        self.ali, self.soft, self.buffer_frames = ali, list(soft), buffer_frames
        self.utts = usable_utterances(data_dir, self.reader, ali, self.soft, skip_log)
        self.lengths = frame_counts(data_dir, self.reader, self.utts)
        self.shards = self._shards()
        x = self.reader[self.utts[0]]
        self.feat_dim, self.dtype = x.shape[1], x.dtype
        self.top_k = self.soft[0].read(self.utts[0], len(x))[0].shape[1] if self.soft else 0
        log.info("%s: %d utterances, %d frames in %d shards, streamed through a buffer of %d frames",
                 data_dir, len(self.utts), len(self), len(self.shards), buffer_frames)

    def _shards(self) -> list[np.ndarray]:
        """Utterance indices grouped by feature ark (in order of first use), each in file order."""
        groups: dict[str, list[tuple[int, int]]] = {}
        for i, utt in enumerate(self.utts):
            path, _, offset = self.reader.feats[utt].rpartition(":")
            if not path or not offset.isdigit():  # not `ark:offset`: one shard of its own
                path, offset = self.reader.feats[utt], "0"
            groups.setdefault(path, []).append((int(offset), i))
        return [np.array([i for _, i in sorted(g)], dtype=np.int64) for g in groups.values()]

    def __len__(self) -> int:
        return int(self.lengths.sum())

    @property
    def num_soft(self) -> int:
        return len(self.soft)

    def bytes_per_frame(self) -> int:
        """Memory of one frame in a buffer: features, target, utterance bounds, soft targets."""
        return self.feat_dim * np.dtype(self.dtype).itemsize + 24 + self.num_soft * self.top_k * 6

    def num_steps(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """The epoch's utterance order: every shard in file order from a seeded starting point
        (wrapping around), the shards interleaved in proportion to their sizes, so that a
        buffer holds utterances from every shard (different speakers) yet each file is read
        sequentially."""
        gen = torch.Generator().manual_seed(derived_seed(seed, epoch, -1))
        shards = [self.shards[i] for i in torch.randperm(len(self.shards), generator=gen).tolist()]
        shards = [np.roll(s, -int(torch.randint(len(s), (1,), generator=gen))) for s in shards]
        position = np.concatenate([(np.arange(len(s)) + 0.5) / len(s) for s in shards])
        return np.concatenate(shards)[np.argsort(position, kind="stable")]

    def epoch_batches(self, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1):
        """(buffer FrameSet, frame indices) for each minibatch of the epoch on this rank; the
        rank reads the utterances of the epoch order whose first frame falls in its 1/world_size
        of the frames."""
        order = self.epoch_order(seed, epoch)
        starts = np.cumsum(self.lengths[order]) - self.lengths[order]
        mine = order[starts * world_size // len(self) == rank]
        sizes = rank_batch_sizes(len(self), int(self.lengths[mine].sum()), batch_size)
        gen = torch.Generator().manual_seed(derived_seed(seed, epoch, rank))
        return self._buffered(mine, sizes, gen)

    def _buffered(self, utts: np.ndarray, sizes: list[int], gen: torch.Generator):
        """Minibatches of `sizes` frames from `utts` in order, shuffled within each buffer."""
        carry: list[tuple[int, int]] = []  # (utterance, its first frame not yet used)
        nxt, k = 0, 0
        while k < len(sizes):
            block, have = carry, sum(int(self.lengths[u]) - s for u, s in carry)
            while have < max(self.buffer_frames, sizes[k]) and nxt < len(utts):
                block.append((int(utts[nxt]), 0))
                have += int(self.lengths[utts[nxt]])
                nxt += 1
            n, used = 0, 0
            while k + n < len(sizes) and used + sizes[k + n] <= have:
                used, n = used + sizes[k + n], n + 1
            if n == 0:
                raise AsrkdError(f"{self.path}: the utterances hold fewer frames than utt2num_frames says")
            frames = self.read([u for u, _ in block])
            usable = torch.cat([torch.arange(int(frames.offsets[i]) + s, int(frames.offsets[i + 1]))
                                for i, (_, s) in enumerate(block)] or [torch.zeros(0, dtype=torch.int64)])
            carry = self._left_over(block, used)
            take = usable[:used][torch.randperm(used, generator=gen)]
            del usable
            for idx in take.split(sizes[k:k + n]):
                yield frames, idx
            k += n

    def _left_over(self, block: list[tuple[int, int]], used: int) -> list[tuple[int, int]]:
        """The (utterance, first frame) of the block's frames after its first `used` unused ones."""
        out, seen = [], 0
        for u, s in block:
            n = int(self.lengths[u]) - s
            if seen + n > used:
                out.append((u, s + max(used - seen, 0)))
            seen += n
        return out

    def read(self, utts: list[int]) -> FrameSet:
        """The `FrameSet` of utterances `utts` (indices into `self.utts`), read into arrays of
        their known size."""
        lengths = self.lengths[utts]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        n, m = int(offsets[-1]), self.num_soft
        feats = np.empty((n, self.feat_dim), self.dtype)
        targets = np.empty(n, np.int64)
        soft_ids = np.empty((m, n, self.top_k), np.int32) if m else None
        soft_probs = np.empty((m, n, self.top_k), np.float16) if m else None
        for i, u in enumerate(utts):
            utt, a, b = self.utts[u], int(offsets[i]), int(offsets[i + 1])
            x = self.reader[utt]
            if len(x) != b - a:
                raise AsrkdError(f"{self.path / 'utt2num_frames'}: '{utt}' has {b - a} frames there but {len(x)} "
                                 "in feats.scp: rerun compute-fbank")
            feats[a:b] = x
            targets[a:b] = self.ali.targets(utt, len(x))
            for j, s in enumerate(self.soft):
                soft_ids[j, a:b], soft_probs[j, a:b] = s.read(utt, len(x))
        first = np.repeat(offsets[:-1], lengths)
        out = FrameSet([self.utts[u] for u in utts], offsets, torch.from_numpy(feats), torch.from_numpy(first),
                       torch.from_numpy(first + np.repeat(lengths, lengths) - 1), torch.from_numpy(targets))
        if m:
            out.soft_ids, out.soft_probs = torch.from_numpy(soft_ids), torch.from_numpy(soft_probs)
        return out


def available_memory() -> int:
    """Bytes this process may still allocate: the smaller of the machine's MemAvailable and
    its cgroup's limit less its usage (a Slurm job's share)."""
    avail = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            avail.append(int(Path(limit).read_text()) - int(Path(usage).read_text()))
        except (OSError, ValueError):  # no such cgroup, or "max"
            pass
    if not avail:
        avail.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    return max(min(avail), 0)


def estimated_bytes(data_dir: str | Path, soft: list[SoftTargets] = ()) -> tuple[int, str]:
    """The memory `load_frames` would take for a data dir, and from what it was estimated: the
    frame count from utt2num_frames (else the feature arks' size as float32 frames) times
    the bytes of a frame (features, target, utterance bounds, soft targets)."""
    d = Path(data_dir)
    reader = FeatureReader(d, cmvn=False)
    if not len(reader):
        raise AsrkdError(f"{d / 'feats.scp'}: no utterances")
    x = reader[reader.keys()[0]]
    k = sum(int(s.info.get("top_k", 0)) for s in soft)
    per_frame = x.shape[1] * x.itemsize + 24 + 6 * k
    if (d / "utt2num_frames").is_file():
        frames, source = sum(int(v) for v in read_table(d / "utt2num_frames").values()), "utt2num_frames"
    else:
        arks = {v.rpartition(":")[0] for v in reader.feats.values()}
        frames = sum(Path(a).stat().st_size for a in arks if Path(a).is_file()) // (x.shape[1] * x.itemsize)
        source = "the size of the feature arks"
    return frames * per_frame, f"{frames} frames ({source}) x {per_frame} bytes"


def choose_train_data(setting: str, data_dir: str | Path, soft: list[SoftTargets] = (), ranks: int = 1,
                      available: int | None = None) -> tuple[str, str]:
    """("ram" or "stream", why): the config's `train_data`, or with auto "ram" when the
    estimated size times the `ranks` on this machine (each holds a copy) is at most half the
    `available` memory (loading briefly holds the frames twice)."""
    if setting != "auto":
        return setting, f"train_data: {setting} in the config"
    need, how = estimated_bytes(data_dir, soft)
    available = available_memory() if available is None else available
    verdict = "at most" if need * ranks <= available // 2 else "more than"
    why = (f"train_data auto: about {need * ranks / 1e9:.2f} GB ({how}{f' x {ranks} ranks' if ranks > 1 else ''}), "
           f"{verdict} half of the {available / 1e9:.1f} GB available")
    return ("ram" if verdict == "at most" else "stream"), why

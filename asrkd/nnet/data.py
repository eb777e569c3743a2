"""Frame-level training data: CMVN'd fbank frames of a data dir in one array, each frame's
utterance bounds, its senone target (an alignment dir) and optionally its soft targets
(top-k ids and probabilities) from one or more teachers. Context windows are gathered per minibatch, so memory holds
the unspliced frames only (the 26-frame window would be 26 times larger)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asrkd.features import FeatureReader, feature_kind
from asrkd.hmm.alignment import AlignmentDir
from asrkd.nnet.soft_targets import SoftTargets
from asrkd.utils import AsrkdError, write_list

log = logging.getLogger(__name__)


@dataclass
class FrameSet:
    """Frames [N, D] of `utts` in order; frame i belongs to the utterance spanning
    first[i]..last[i]; `targets` [N] senones; `soft_ids`/`soft_probs` [M, N, k] (int32 and
    float16, M teachers) or None."""

    utts: list[str]
    offsets: np.ndarray  # [U + 1] frame offset of each utterance
    feats: torch.Tensor
    first: torch.Tensor
    last: torch.Tensor
    targets: torch.Tensor
    soft_ids: torch.Tensor | None = None
    soft_probs: torch.Tensor | None = None
    kind: str | None = None  # what the features are (`feature_kind` of their data dir)

    def __len__(self) -> int:
        return len(self.feats)

    @property
    def feat_dim(self) -> int:
        return self.feats.shape[1]

    def spliced(self, idx: torch.Tensor, left: int, right: int) -> torch.Tensor:
        """[B, (left+1+right)*D] context windows of frames `idx`, edge frames repeated
        (Kaldi splice-feats within each utterance) by a clamped index gather."""
        j = idx[:, None] + torch.arange(-left, right + 1)
        j = torch.minimum(torch.maximum(j, self.first[idx, None]), self.last[idx, None])
        return self.feats[j].reshape(len(idx), -1)

    def utterance(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    @property
    def num_soft(self) -> int:
        """How many teachers' soft targets the frames have."""
        return 0 if self.soft_ids is None else len(self.soft_ids)

    def batches(self, batch_size: int, generator: torch.Generator | None = None):
        """Frame indices in minibatches: shuffled with `generator`, in order without."""
        order = torch.randperm(len(self), generator=generator) if generator is not None else torch.arange(len(self))
        return order.split(batch_size)

    def num_steps(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def epoch_batches(self, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1):
        """(self, frame indices) per minibatch of an epoch, in its seeded order. With several
        ranks each draws the same minibatches and takes its 1/world_size slice of each, so
        together they compute the minibatches of one process."""
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        for idx in self.batches(batch_size, gen):
            yield self, idx.tensor_split(world_size)[rank] if world_size > 1 else idx


def usable_utterances(data_dir: str | Path, reader: FeatureReader, ali: AlignmentDir, soft: list[SoftTargets] = (),
                      skip_log: str | Path | None = None) -> list[str]:
    """The utterances of `reader` (in feats.scp order) that have an alignment and soft targets
    in every dir of `soft`; the others are counted, logged and listed in `skip_log`."""
    utts, skipped = [], []
    for utt in reader.keys():
        if utt not in ali.ali:
            skipped.append(f"{utt} no alignment")
        elif missing := [s.path for s in soft if utt not in s]:
            skipped.append(f"{utt} no soft targets in {missing[0]}")
        else:
            utts.append(utt)
    if not utts:
        no_soft = [u for u in reader.keys() if u in ali.ali]
        raise AsrkdError(f"{data_dir}: no utterance has soft targets in {soft[0].path} (made for another data set?)"
                         if soft and no_soft else f"{data_dir}: no utterance has an alignment in {ali.path}")
    if skipped:
        log.warning("%s: %d of %d utterances skipped (no alignment or soft targets)%s", data_dir, len(skipped),
                    len(reader), f", listed in {skip_log}" if skip_log else "")
    if skip_log:
        write_list(skip_log, skipped)
    return utts


def load_frames(data_dir: str | Path, ali: AlignmentDir, soft: list[SoftTargets] = (),
                skip_log: str | Path | None = None) -> FrameSet:
    """Frames of every utterance of `data_dir` that has an alignment (and soft targets in
    every dir of `soft`); utterances without are skipped, counted and listed in `skip_log`."""
    reader = FeatureReader(data_dir, cmvn=True)
    utts = usable_utterances(data_dir, reader, ali, soft, skip_log)
    feats, targets, soft_rows = [], [], []
    for utt in utts:
        x = reader[utt]
        feats.append(x)
        targets.append(ali.targets(utt, len(x)))
        soft_rows.append([s.read(utt, len(x)) for s in soft])
    lengths = np.array([len(x) for x in feats])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    first = np.repeat(offsets[:-1], lengths)
    out = FrameSet(utts, offsets, torch.from_numpy(np.concatenate(feats)), torch.from_numpy(first),
                   torch.from_numpy(first + np.repeat(lengths, lengths) - 1),
                   torch.from_numpy(np.concatenate(targets).astype(np.int64)), kind=feature_kind(data_dir))
    if soft:
        out.soft_ids = torch.from_numpy(np.stack([np.concatenate([r[m][0] for r in soft_rows]).astype(np.int32)
                                                  for m in range(len(soft))]))
        out.soft_probs = torch.from_numpy(np.stack([np.concatenate([r[m][1] for r in soft_rows])
                                                    for m in range(len(soft))]))
    log.info("%s: %d utterances, %d frames", data_dir, len(utts), len(out))
    return out

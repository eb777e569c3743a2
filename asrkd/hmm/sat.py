"""Speaker-adaptive training (Kaldi train_sat.sh, tri3b): tied-state triphones on LDA+MLLT
features adapted per speaker by fMLLR (`asrkd.hmm.fmllr`), the transforms re-estimated
during EM, and a speaker-independent alignment model for the first pass of alignment and
decoding. Writes, beside `final.pt`, `tree` and `final.mat`: `final.alimdl` and the training
speakers' `trans.ark`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asrkd.checkpoint import save_checkpoint
from asrkd.data import read_utt2spk
from asrkd.hmm.align import ALIMDL, Corpus, load_corpus, load_model, model_features, speech_pdfs
from asrkd.hmm.fmllr import SpeakerTransforms, apply_fmllr, compose, identity, speaker_fmllr
from asrkd.hmm.gmm import DiagGmmSet
from asrkd.hmm.train import _done, _finish, _source_alignment, _train_tied, stack
from asrkd.hmm.transform import FeatureTransform, variance_floor
from asrkd.outputs import Output
from asrkd.topo import read_topo
from asrkd.utils import AsrkdError

log = logging.getLogger(__name__)


@dataclass
class Sat:
    """fMLLR re-estimation during EM (the feature update of `asrkd.hmm.train.train_gmm`): at
    each of `iters`, every speaker's transform is followed by the one estimated from the
    current model and alignment (silence frames out) and the features recomputed."""

    si: dict[str, np.ndarray]  # speaker-independent features
    utt2spk: dict[str, str]
    transforms: dict[str, np.ndarray]
    iters: set[int]
    speech_pdfs: np.ndarray | None = None
    name = "fmllr"

    def features(self, corpus: Corpus) -> torch.Tensor:
        corpus.feats = {u: apply_fmllr(self.transforms[self.utt2spk[u]], self.si[u]) for u in corpus.utts}
        return torch.as_tensor(variance_floor(list(corpus.feats.values())))

    def update(self, gmm: DiagGmmSet, corpus: Corpus, ali: dict) -> torch.Tensor:
        new, _ = speaker_fmllr(gmm, corpus.feats, ali, self.speech_pdfs.astype(np.float64), self.utt2spk)
        self.transforms = {s: compose(new[s], w) if s in new else w for s, w in self.transforms.items()}
        return self.features(corpus)

    def state(self) -> dict:
        return {"fmllr": {s: torch.from_numpy(w) for s, w in self.transforms.items()}}

    def restore(self, state: dict) -> None:
        self.transforms = {s: w.numpy() for s, w in state["fmllr"].items()}


def alignment_model(gmm: DiagGmmSet, corpus: Corpus, ali: dict, si: dict[str, np.ndarray]) -> DiagGmmSet:
    """Kaldi's final.alimdl: one re-estimation of `gmm` on the speaker-independent features
    `si`, with the component posteriors of the adapted features (gmm-acc-stats-twofeats)."""
    x, a = stack(corpus, ali)
    y = np.concatenate([si[u] for u in corpus.utts if u in ali])
    occ, m1, m2, _ = gmm.accumulate(x, a, stats_x=y)
    si_gmm = DiagGmmSet(gmm.means, gmm.vars, gmm.logw)
    si_gmm.update(occ, m1, m2, variance_floor([y]), min_occ=0.0)
    return si_gmm


def train_sat(data_dir: str | Path, lang_dir: str | Path, ali_dir: str | Path, exp_dir: str | Path,
              num_leaves: int = 1500, tot_gauss: int = 8000, num_iters: int = 35, min_leaf_occ: float = 100.0,
              split_silence: bool = True, cluster_leaves: bool = False,
              fmllr_iters: tuple[int, ...] = (2, 4, 6, 12), force: bool = False) -> list[dict]:
    """SAT triphones (Kaldi train_sat.sh) from an LDA+MLLT system's alignment: each speaker's
    fMLLR transform of that system's model, a new tree on the adapted features, EM with the
    transforms re-estimated at `fmllr_iters`, then the alignment model `final.alimdl`."""
    exp_dir, lang_dir, ali_dir = Path(exp_dir), Path(lang_dir), Path(ali_dir)
    opts = {"num_leaves": num_leaves, "tot_gauss": tot_gauss, "num_iters": num_iters, "min_leaf_occ": min_leaf_occ,
            "split_silence": split_silence, "cluster_leaves": cluster_leaves, "fmllr_iters": sorted(fmllr_iters)}
    out = Output(exp_dir, "train-sat", opts, {"data": data_dir, "lang": lang_dir, "ali": ali_dir})
    if (done := _done(out, force)) is not None:
        return done
    transform = FeatureTransform.read(ali_dir)
    if transform is None:
        raise AsrkdError(f"{ali_dir}: not an LDA+MLLT system's alignment (no final.mat); SAT starts from one")
    t0 = time.time()
    src_gmm, src_tree = load_model(ali_dir)
    corpus = load_corpus(data_dir, lang_dir, features=model_features(ali_dir))
    ali = _source_alignment(corpus, data_dir, ali_dir)
    utt2spk = read_utt2spk(data_dir, corpus.utts)
    si = dict(corpus.feats)
    transforms, _ = speaker_fmllr(src_gmm, si, ali, speech_pdfs(src_tree, lang_dir).astype(np.float64), utt2spk)
    sat = Sat(si, utt2spk, {utt2spk[u]: transforms.get(utt2spk[u], identity(src_gmm.dim)) for u in corpus.utts},
              set(fmllr_iters))
    sat.features(corpus)
    gmm, tree, final_ali, history = _train_tied(out, data_dir, lang_dir, ali_dir, corpus, ali, src_tree,
                                                read_topo(lang_dir / "topo"), opts, sat)
    si_gmm = alignment_model(gmm, corpus, final_ali, si)
    save_checkpoint(exp_dir / ALIMDL, si_gmm.state_dict(), {"kind": "gmm"})
    SpeakerTransforms(sat.transforms, utt2spk).write(exp_dir)
    return _finish(out, gmm, tree, history, t0, transform)

"""The ensemble (members that differ only in seed) and the choice of one model among
several (the students of a temperature sweep) by dev frame accuracy."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from asrkd.nnet.config import NnetConfig
from asrkd.nnet.expdir import NnetExpDir
from asrkd.nnet.model import model_info
from asrkd.nnet.runtime import pick_device
from asrkd.nnet.train import load_sets, model_inputs, model_output, train_dnn
from asrkd.utils import AsrkdError

log = logging.getLogger(__name__)


def train_ensemble(cfg: NnetConfig, data_dir, ali_dir, dev_dir, dev_ali_dir, exp_dir, device: str = "auto",
                   force: bool = False) -> list[Path]:
    """`cfg.num_members` hard-target models differing only in seed (member k: seed k), in
    exp_dir/member_<k>; finished members are skipped, a killed one resumes."""
    exp_dir = Path(exp_dir)
    pick_device(device)  # an unusable device is an error before anything is written
    inputs = model_inputs(data_dir, ali_dir, dev_dir, dev_ali_dir)
    members = [model_output(NnetExpDir(exp_dir).member(k), cfg, k, False, inputs) for k in range(cfg.num_members)]
    todo = [m for m in members if not m.done(force)]
    if todo:
        train, dev, num_pdfs, meta = load_sets(data_dir, ali_dir, dev_dir, dev_ali_dir, exp_dir)
        for k, m in enumerate(members):
            if m in todo:
                train_dnn(cfg, train, dev, num_pdfs, m, seed=k, device=device, meta=meta)
    log.info("%s: %d members trained", exp_dir, len(members))
    return [m.path for m in members]


def select_model(model_dirs, link) -> Path:
    """The model with the best dev frame accuracy (its best epoch's) among `model_dirs`, e.g.
    the students of a temperature sweep; `link` becomes a relative symlink to it."""
    link = Path(link)
    if link.exists() and not link.is_symlink():
        raise AsrkdError(f"{link}: exists and is not a symlink; move it away (it holds a model of its own)")
    accs = {Path(d): model_info(d)["dev_frame_accuracy"] for d in model_dirs}
    if not accs:
        raise AsrkdError(f"{link}: no model to choose from")
    best = max(accs, key=accs.get)
    for d, acc in accs.items():
        log.info("%s: dev frame accuracy %.2f%%%s", d, 100 * acc, "  <- chosen" if d == best else "")
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(best.resolve(), link.parent.resolve()))
    os.replace(tmp, link)
    return best

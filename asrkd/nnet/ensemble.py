"""The ensemble (members that differ in seed, and with `member_archs` in architecture) and
the choice of one model among several (the students of a temperature sweep) by dev frame
accuracy."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from asrkd.jobs import JobConfig, run_jobs
from asrkd.nnet.config import NnetConfig
from asrkd.nnet.expdir import NnetExpDir
from asrkd.nnet.model import model_info
from asrkd.nnet.runtime import distributed_env, pick_device
from asrkd.nnet.train import load_sets, model_inputs, model_output, train_dnn
from asrkd.utils import AsrkdError

log = logging.getLogger(__name__)


_SETS: dict = {}  # the training and dev frames this process loaded last, for its next member


def _member_job(cfg: NnetConfig, sets: tuple, exp_dir: Path, out, seed: int, device: str) -> list[dict]:
    """One job: train one member (`out`, an Output) on the data and alignments `sets`."""
    if sets not in _SETS:
        _SETS.clear()
        _SETS[sets] = load_sets(*sets, exp_dir, cfg=cfg)
    train, dev, num_pdfs, meta = _SETS[sets]
    return train_dnn(cfg, train, dev, num_pdfs, out, seed=seed, device=device, meta=meta)


def train_ensemble(cfg: NnetConfig, data_dir, ali_dir, dev_dir, dev_ali_dir, exp_dir, device: str = "auto",
                   force: bool = False, jobs: JobConfig | None = None) -> list[Path]:
    """`cfg.num_members` hard-target models differing in seed (member k: seed k, architecture
    `cfg.member_config(k).arch`), in
    exp_dir/member_<k>, a job each (one after another here, or a Slurm array with `jobs`);
    finished members are skipped, a killed one resumes."""
    exp_dir = Path(exp_dir)
    if distributed_env().active:
        raise AsrkdError("train-ensemble does not run under torchrun: train each member with "
                         "`torchrun ... train-dnn --seed <k> ... EXP/member_<k>`")
    pick_device(device)  # an unusable device is an error before anything is written
    sets = (data_dir, ali_dir, dev_dir, dev_ali_dir)
    inputs = model_inputs(*sets)
    cfgs = [cfg.member_config(k) for k in range(cfg.num_members)]
    members = [model_output(NnetExpDir(exp_dir).member(k), cfgs[k], k, False, inputs) for k in range(cfg.num_members)]
    todo = [k for k, m in enumerate(members) if not m.done(force)]
    if todo:
        key = members[todo[0]].key()
        run_jobs(_member_job, [(cfgs[k], sets, exp_dir, members[k], k, device) for k in todo], "members",
                 exp_dir / "log", jobs, key=key)
    _SETS.clear()
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

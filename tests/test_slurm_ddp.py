"""Data-parallel training across "nodes" as on a cluster: `srun` starts 2 tasks on the one-node
Slurm (tools/slurm.sh), each a `torchrun` of one rank meeting at a c10d rendezvous, and trains
the model one process trains (per-epoch loss within 1%, the same epochs)."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from asrkd.config import load_config
from asrkd.nnet.config import NnetConfig
from asrkd.nnet.train import train_model
from conftest import ROOT, one_thread
from slurm_cluster import slurm_cluster  # noqa: F401

CONFIG = "hidden: 32\nlayers: 2\ndropout: 0.0\nmax_epochs: 3\nprecision: fp32\nlearning_rate: 0.002\nbatch_size: 300\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def history(model_dir: Path) -> list[dict]:
    return json.loads((model_dir / "log/train.json").read_text())


def test_srun_torchrun_two_tasks_trains_the_model_of_one_process(slurm_cluster, yesno, yesno_mono, tmp_path):
    (tmp_path / "nnet.yaml").write_text(CONFIG)
    sets = [yesno / "train_yesno", yesno_mono / "mono_ali"] * 2
    with one_thread():
        train_model(load_config(NnetConfig, tmp_path / "nnet.yaml"), *sets, tmp_path / "one", seed=1, device="cpu")
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = (f"exec {torchrun} --nnodes 2 --nproc-per-node 1 --rdzv-id $SLURM_JOB_ID --rdzv-backend c10d "
           f"--rdzv-endpoint 127.0.0.1:{free_port()} -m asrkd.cli train-dnn --config {tmp_path / 'nnet.yaml'} "
           f"--seed 1 --device cpu {' '.join(map(str, sets))} {tmp_path / 'two'}")
    proc = subprocess.run(["srun", "--nodes", "1", "--ntasks", "2", "--cpus-per-task", "1", "--time", "10",
                           "--export", "ALL,OMP_NUM_THREADS=1", "bash", "-c", cmd],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 ranks (gloo)" in proc.stderr
    one, two = history(tmp_path / "one"), history(tmp_path / "two")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert (a["world_size"], b["world_size"]) == (1, 2)
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.01)

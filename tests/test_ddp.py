"""Data-parallel training under torchrun (2 ranks, gloo on the CPU): the model one process
trains, rank 0 alone writing; a killed run resumes; distillation paths run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import asrkd.nnet.runtime as runtime
from asrkd.config import load_config
from asrkd.nnet.config import NnetConfig
from asrkd.nnet.model import load_nnet
from asrkd.nnet.soft_targets import make_soft_targets
from asrkd.nnet.train import train_model
from asrkd.utils import AsrkdError
from conftest import ROOT, one_thread

CONFIG = ("hidden: 32\nlayers: 2\ndropout: 0.0\nmax_epochs: 3\nprecision: fp32\nlearning_rate: 0.002\n"
          "temperatures: [1.0, 2.0]\ntemperature: 2.0\ntop_k: 4\n")

# asrkd.cli, each rank noting what it writes; with ASRKD_TEST_KILL rank 0 dies after its first checkpoint
DRIVER = '''
import os, sys
import asrkd.nnet.data as data
import asrkd.nnet.train as train
from asrkd.cli import main
from asrkd.outputs import Output

rank = os.environ["RANK"]
def noted(name, func, kill=False):
    def wrapper(*args, **kwargs):
        with open(os.path.join(os.environ["WRITES"], f"rank{rank}.txt"), "a") as f:
            f.write(name + "\\n")
        result = func(*args, **kwargs)
        if kill and os.environ.get("ASRKD_TEST_KILL"):
            os._exit(3)
        return result
    return wrapper
for name in ("save_config", "save_nnet", "atomic_file"):
    setattr(train, name, noted(name, getattr(train, name)))
train.save_checkpoint = noted("save_checkpoint", train.save_checkpoint, kill=True)
data.write_list = noted("write_list", data.write_list)
Output.start, Output.finish = noted("start", Output.start), noted("finish", Output.finish)
main(sys.argv[1:])
'''


def torchrun(args: list, tmp_path: Path, driver: bool = False, **env) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node 2 -m asrkd.cli ARGS` (or the write-noting driver), one thread a rank."""
    exe = Path(sys.executable).with_name("torchrun")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    if driver:
        (tmp_path / "driver.py").write_text(DRIVER)
        entry = [str(tmp_path / "driver.py")]
    else:
        entry = ["-m", "asrkd.cli"]
    (tmp_path / "writes").mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WRITES": str(tmp_path / "writes"), **env}
    return subprocess.run([*cmd, "--standalone", "--nproc-per-node", "2", *entry, *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def history(model_dir: Path) -> list[dict]:
    return json.loads((model_dir / "log/train.json").read_text())


@pytest.fixture(scope="module")
def runs(yesno, yesno_mono, tmp_path_factory):
    """One model trained by one process and by torchrun with 2 ranks (noting each rank's
    writes). The batch size leaves one frame for the last minibatch: rank 1 gets none of it."""
    tmp = tmp_path_factory.mktemp("ddp")
    frames = sum(int(line.split()[1]) for line in (yesno / "train_yesno/utt2num_frames").read_text().splitlines())
    batch = next((b for b in range(300, 1000) if (frames - 1) % b == 0), 512)
    (tmp / "nnet.yaml").write_text(CONFIG + f"batch_size: {batch}\n")
    sets = [yesno / "train_yesno", yesno_mono / "mono_ali"] * 2
    with one_thread():
        train_model(load_config(NnetConfig, tmp / "nnet.yaml"), *sets, tmp / "one", seed=1, device="cpu")
    proc = torchrun(["train-dnn", "--config", tmp / "nnet.yaml", "--seed", 1, "--device", "cpu", *sets, tmp / "two"],
                    tmp, driver=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, sets, proc


def test_torchrun_trains_the_model_of_one_process(runs):
    tmp, _, proc = runs
    one, two = history(tmp / "one"), history(tmp / "two")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.01)
        assert b["dev_frame_accuracy"] == pytest.approx(a["dev_frame_accuracy"], abs=0.005)
        assert (a["world_size"], b["world_size"]) == (1, 2)
    assert load_nnet(tmp / "two").info["world_size"] == 2
    assert "2 ranks (gloo)" in proc.stderr and proc.stderr.count("epoch 3: lr") == 1  # rank 0 logs
    # one set of outputs, all written by rank 0
    assert not (tmp / "writes/rank1.txt").exists()
    writes = (tmp / "writes/rank0.txt").read_text().split()
    assert writes.count("save_checkpoint") == 3 and writes.count("start") == writes.count("finish") == 1
    assert {"save_config", "save_nnet", "atomic_file", "write_list"} <= set(writes)
    assert sorted(p.name for p in (tmp / "two").iterdir()) == [".asrkd.json", "final.pt", "log", "nnet.yaml"]
    assert sorted(p.name for p in (tmp / "two/log").iterdir()) == ["skipped_dev.txt", "skipped_train.txt",
                                                                  "train.json"]


def test_torchrun_resumes_a_killed_run(runs):
    tmp, sets, _ = runs
    args = ["train-dnn", "--config", tmp / "nnet.yaml", "--seed", 1, "--device", "cpu", *sets, tmp / "killed"]
    proc = torchrun(args, tmp, driver=True, ASRKD_TEST_KILL="1")
    assert proc.returncode != 0
    assert (tmp / "killed/checkpoint.pt").is_file() and not (tmp / "killed/final.pt").exists()
    proc = torchrun(args, tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming after epoch 1" in proc.stderr and not (tmp / "killed/checkpoint.pt").exists()
    a, b = (load_nnet(tmp / d).state_dict() for d in ("two", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in history(tmp / "killed")] == [h["train_loss"] for h in history(tmp / "two")]


def test_torchrun_distils_from_teachers_and_streamed_soft_targets(runs, yesno):
    tmp, sets, _ = runs
    (tmp / "student.yaml").write_text(CONFIG + "batch_size: 256\nteacher_mixup: 1.0\nhard_weight: 0.1\n")
    proc = torchrun(["train-dnn", "--config", tmp / "student.yaml", "--teacher-nnet", tmp / "one", "--device", "cpu",
                     *sets, tmp / "mixup"], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert history(tmp / "mixup")[-1]["dev_frame_accuracy"] > 0.5
    make_soft_targets([load_nnet(tmp / "one")], yesno / "train_yesno", {2.0: tmp / "soft_T2"}, k=4)
    (tmp / "streamed.yaml").write_text(CONFIG + "batch_size: 256\ntrain_data: stream\nshuffle_buffer: 3000\n")
    proc = torchrun(["train-dnn", "--config", tmp / "streamed.yaml", "--soft-targets", tmp / "soft_T2",
                     "--device", "cpu", *sets, tmp / "student"], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hist = history(tmp / "student")
    assert hist[-1]["dev_frame_accuracy"] > 0.5 and {(h["world_size"], h["train_data"]) for h in hist} == {
        (2, "stream")}


LEAVE = '''
import os
import torch
import asrkd.nnet.runtime as runtime
torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
w = torch.nn.Parameter(torch.ones(2))
opt = torch.optim.Adam([w]); w.sum().backward(); opt.step()  # imports torch._dynamo and torch.distributed.nn
runtime.leave_group()
print(sorted({open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")}))
'''


def test_leaving_the_group_stops_gloo_threads():
    """destroy_process_group() frees the group and joins gloo's threads, even when modules that
    hold the group (torch.distributed.nn, imported by the optimizer) come after it: threads left
    running into Python's shutdown abort a rank at exit now and then."""
    proc = subprocess.run([sys.executable, "-c", LEAVE], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "gloo" not in proc.stdout, proc.stdout


def test_ranks_need_a_gpu_each(monkeypatch):
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(AsrkdError, match=r"torchrun started 2 ranks on this machine but torch sees 1 CUDA device"):
        runtime.distributed_setup("cuda")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(AsrkdError, match="inconsistent torchrun variables"):
        runtime.distributed_env()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert runtime.distributed_env() == runtime.SINGLE

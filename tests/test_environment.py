"""The environment recorded with every result: its values, and where it is stored (model
files, decode_info.json, results.json and results.md)."""

import json
import platform
import shutil
import subprocess
from pathlib import Path

import kaldifst
import numpy as np
import pytest
import torch

import asrkd
from asrkd.checkpoint import load_checkpoint, read_environment, save_checkpoint
from asrkd.cli import main
from asrkd.decode.decoder import decode
from asrkd.environment import KERNEL_VARS, PACKAGES, environment, git_state
from asrkd.hmm.align import save_model
from asrkd.hmm.gmm import DiagGmmSet
from asrkd.hmm.tree import ContextTree
from asrkd.nnet.config import NnetConfig
from asrkd.nnet.data import FrameSet
from asrkd.nnet.model import SenoneDnn, load_nnet, save_nnet
from asrkd.nnet.train import train_dnn
from asrkd.report import compare

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="no git")


def test_environment_values(monkeypatch):
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    env = environment()
    assert env["packages"]["torch"] == torch.__version__ and env["packages"]["numpy"] == np.__version__
    assert set(env["packages"]) == set(PACKAGES) and env["python"] == platform.python_version()
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and env["device"] == "cpu"
    assert env["cpu"] and env["amx"] in (True, False, None)
    assert env["kernel_env"]["MKL_CBWR"] == "COMPATIBLE" and set(env["kernel_env"]) <= set(KERNEL_VARS)
    assert "ONEDNN_MAX_CPU_ISA" not in env["kernel_env"]
    n = torch.get_num_threads()
    assert env["threads"] == n
    try:  # the thread count is read at each call, not cached
        torch.set_num_threads(n + 1)
        assert environment()["threads"] == n + 1
    finally:
        torch.set_num_threads(n)
    if Path("/proc/cpuinfo").is_file():
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
        assert env["amx"] == ("amx_tile" in flags or "amx_bf16" in flags)
    assert json.loads(json.dumps(env)) == env


@needs_git
def test_commit_is_the_package_checkouts():
    root = Path(asrkd.__file__).resolve().parent.parent
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                          text=True)
    lines = head.stdout.split()
    expected = lines[1] if head.returncode == 0 and Path(lines[0]).resolve() == root else None
    assert environment()["asrkd_commit"] == expected


def test_not_a_git_checkout_gives_none(tmp_path):
    assert git_state(tmp_path) == {"commit": None, "dirty": None}
    assert git_state(tmp_path / "missing") == {"commit": None, "dirty": None}


@needs_git
def test_git_state_of_a_work_tree(tmp_path):
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-qm", "a")
    assert git_state(tmp_path) == {"commit": git("rev-parse", "HEAD"), "dirty": False}
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True
    (tmp_path / "sub").mkdir()  # inside a work tree, but not its top: not the package's checkout
    assert git_state(tmp_path / "sub")["commit"] is None


def test_cli_env_prints_the_environment(capsys):
    main(["env"])
    out = json.loads(capsys.readouterr().out)
    assert out["packages"]["torch"] == torch.__version__ and out["threads"] == torch.get_num_threads()


def test_checkpoints_carry_the_environment_and_resume_under_other_threads(tmp_path):
    ckpt = tmp_path / "c.pt"
    save_checkpoint(ckpt, {"x": torch.ones(2)}, {"data": "abc"})
    state = load_checkpoint(ckpt, {"data": "abc"})
    assert state["environment"] == environment() and "environment" not in state["meta"]
    assert read_environment(ckpt) == environment()
    save_checkpoint(ckpt, {"x": torch.ones(2)}, {"data": "abc"}, {**environment(), "threads": 99})
    assert load_checkpoint(ckpt, {"data": "abc"})["environment"]["threads"] == 99  # resumes all the same
    torch.save({"x": torch.ones(2), "meta": {}}, ckpt)  # a file saved without one
    assert read_environment(ckpt) is None
    ckpt.write_bytes(b"not a checkpoint")
    assert read_environment(ckpt) is None


def test_trained_model_file_carries_its_training_environment(tmp_path, monkeypatch):
    """A DNN trained with OMP_NUM_THREADS=1 records one thread, and the CPU as its device."""
    n, g = 64, torch.Generator().manual_seed(0)
    frames = FrameSet(["u"], np.array([0, n]), torch.randn(n, 4, generator=g), torch.zeros(n, dtype=torch.long),
                      torch.full((n,), n - 1), torch.randint(2, (n,), generator=g))
    cfg = NnetConfig(hidden=8, layers=1, left_context=1, right_context=1, batch_size=32, max_epochs=1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    try:
        train_dnn(cfg, frames, frames, 2, tmp_path / "m", device="cpu")
        expected = environment()
    finally:
        torch.set_num_threads(threads)
    saved = load_checkpoint(tmp_path / "m/final.pt")["environment"]
    assert saved == expected and saved["threads"] == 1 and saved["kernel_env"]["OMP_NUM_THREADS"] == "1"
    assert load_nnet(tmp_path / "m").arch["hidden"] == 8


def _exp(tmp_path: Path, trained: dict) -> tuple[Path, Path]:
    """A GMM dir with a decode, and two members: member_0 with `trained`, member_1 from before
    model files held an environment."""
    gmm, nnet = tmp_path / "exp/tri", tmp_path / "exp/nnet"
    gmm.mkdir(parents=True)
    save_model(gmm, DiagGmmSet.single(np.zeros(4), np.ones(4), 2), ContextTree.monophone({1: 2}))
    info = {"wer": 10.0, "best_lmwt": 10.0, "best_wip": 0.0, "environment": {**environment(), "threads": 1}}
    (gmm / "decode_test").mkdir()
    (gmm / "decode_test/decode_info.json").write_text(json.dumps(info))
    net = SenoneDnn(4, 2, 8, 1, 1, 1)
    save_nnet(nnet / "member_0/final.pt", net, {"dev_frame_accuracy": 0.5}, trained)
    old = {"model": net.state_dict(), "arch": net.arch, "info": {}, "meta": {"kind": "senone_dnn"}}
    (nnet / "member_1").mkdir()
    torch.save(old, nnet / "member_1/final.pt")
    load_nnet(nnet / "member_1")  # still a model file
    fa = {"frame_accuracy": 0.6, "members": [{"frame_accuracy": 0.5, "model": str(nnet / "member_0")},
                                             {"frame_accuracy": 0.55, "model": str(nnet / "member_1")}],
          "member_mean": 0.525, "member_min": 0.5, "member_max": 0.55}
    (nnet / "ensemble").mkdir()
    for s in ("dev", "test"):
        (nnet / f"ensemble/frame_accuracy_{s}.json").write_text(json.dumps(fa))
    return gmm, nnet


def test_results_carry_the_report_and_model_environments(tmp_path):
    trained = {**environment(), "asrkd_commit": "f" * 40, "asrkd_dirty": True, "threads": 16,
               "packages": {**environment()["packages"], "torch": "0.0.1"}}
    gmm, nnet = _exp(tmp_path, trained)
    compare(gmm, nnet, tmp_path / "compare")
    res = json.loads((tmp_path / "compare/results.json").read_text())
    assert res["environment"] == environment()
    assert res["model_environments"] == {"tri": environment(), "nnet/member_0": trained, "nnet/member_1": None}
    assert res["decode_environments"] == {"tri/decode_test": {**environment(), "threads": 1}}
    md = (tmp_path / "compare/results.md").read_text()
    env = environment()
    commit = env["asrkd_commit"][:12] if env["asrkd_commit"] else "not a git checkout"
    assert "## Environment" in md and f"| this report | {commit}" in md
    assert f"| nnet/member_0 | ffffffffffff (modified) | {env['python']} | torch 0.0.1 | " in md
    assert "| 16 | cpu |" in md and "| nnet/member_1 | not recorded |" in md and "| all decodes (1) |" in md
    assert f"torch {torch.__version__}" in md and f"torch {env['cpu_capability']}" in md


def test_decode_info_carries_the_environment(tmp_path):
    """One utterance of one word through a two-state graph."""
    g = kaldifst.StdVectorFst()
    s0, s1 = g.add_state(), g.add_state()
    g.start = s0
    g.add_arc(s0, kaldifst.StdArc(1, 1, 0.0, s1))
    g.add_arc(s1, kaldifst.StdArc(1, 0, 0.0, s1))
    g.set_final(s1, 0.0)
    (tmp_path / "graph").mkdir()
    g.write(str(tmp_path / "graph/HCLG.fst"))
    (tmp_path / "graph/words.txt").write_text("<eps> 0\nYES 1\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data/text").write_text("u1 YES\n")

    class Scorer:
        num_pdfs = 1

        def keys(self):
            return ["u1"]

        def __call__(self, utt):
            return np.zeros((3, 1), dtype=np.float32)

    info = decode(tmp_path / "graph", Scorer(), tmp_path / "data", tmp_path / "decode", lm_weights=[1.0], nj=2)
    saved = json.loads((tmp_path / "decode/decode_info.json").read_text())
    assert info["wer"] == 0.0 and saved["environment"] == {**environment(), "threads": 1}  # the jobs' one thread

"""Senone DNNs, frame data, soft targets, distillation loss, training and its resume."""

import dataclasses

import numpy as np
import pytest
import torch

import asrkd.nnet.losses as nnet_losses
import asrkd.nnet.train as nnet_train
from asrkd.checkpoint import load_checkpoint, save_checkpoint
from asrkd.config import load_config
from asrkd.decode.decoder import NnetScorer, PosteriorScorer
from asrkd.features import FeatureReader, splice
from asrkd.hmm.alignment import AlignmentDir
from asrkd.nnet.config import NnetConfig
from asrkd.nnet.data import load_frames
from asrkd.nnet.ensemble import select_model
from asrkd.nnet.losses import dense_distillation_loss, distillation_loss, mixup
from asrkd.nnet.model import Dropout, SenoneDnn, load_nnet, save_nnet
from asrkd.nnet.runtime import cpu_setup
from asrkd.nnet.soft_targets import SoftTargets, average_posteriors, make_soft_targets, tail_probability, top_k
from asrkd.nnet.train import train_dnn
from asrkd.utils import AsrkdError
from conftest import run_script

TINY = NnetConfig(hidden=32, layers=2, dropout=0.1, batch_size=256, max_epochs=3, num_members=2,
                  temperatures=[1.0, 2.0], top_k=4, temperature=2.0, precision="fp32")


@pytest.fixture(scope="module")
def frames(yesno, yesno_mono):
    return load_frames(yesno / "train_yesno", AlignmentDir(yesno_mono / "mono_ali"))


def test_dnn_log_posteriors(yesno):
    torch.manual_seed(0)
    reader = FeatureReader(yesno / "train_yesno")
    feats = reader[reader.keys()[0]]
    net = SenoneDnn(feats.shape[1], num_senones=11, hidden=32, layers=2, left=20, right=5).eval()
    spliced = torch.from_numpy(splice(feats, 20, 5))
    assert spliced.shape == (len(feats), 26 * 40)
    logp = net.log_posteriors(feats, chunk=100)  # chunked forward: same as one pass
    assert logp.shape == (len(feats), 11) and logp.dtype == np.float32
    np.testing.assert_allclose(np.exp(logp).sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(logp, torch.log_softmax(net(spliced), -1).detach().numpy(), atol=1e-5)
    assert net.num_params() == 26 * 40 * 32 + 32 + 32 * 32 + 32 + 32 * 11 + 11
    assert net.flops_per_frame() == 2 * (26 * 40 * 32 + 32 * 32 + 32 * 11)


def test_dropout_mask_from_random_bytes():
    x = torch.ones(1000, 999, dtype=torch.bfloat16)
    torch.manual_seed(0)
    y = Dropout(0.2)(x)
    assert abs(float((y > 0).float().mean()) - 205 / 256) < 0.003  # a byte >= 51 keeps the unit
    assert abs(float(y.float().mean()) - 1) < 0.01 and y.dtype == x.dtype  # expectation kept
    torch.manual_seed(0)
    assert torch.equal(Dropout(0.2)(x), y)  # the global RNG: seeded, and in checkpoints
    assert torch.equal(Dropout(0.2).eval()(x), x) and torch.equal(Dropout(0.0)(x), x)
    z = torch.ones(5, 3, requires_grad=True)
    Dropout(0.5)(z).sum().backward()
    assert set(z.grad.unique().tolist()) <= {0.0, 2.0}


def test_cpu_setup_flushes_denormals():
    torch.set_flush_denormal(False)  # as a fresh process has it (an earlier test may have trained)
    tiny = torch.tensor([1e-39])  # below float32's smallest normal number, 1.18e-38
    cpu_setup(1)
    try:
        assert float(tiny * 1.0) == 0.0
        torch.set_flush_denormal(False)
        assert float(tiny * 1.0) > 0.0
    finally:
        cpu_setup()


def test_splice_gather_equals_features_splice(yesno, frames):
    reader = FeatureReader(yesno / "train_yesno")
    assert len(frames.utts) == 30 and frames.feat_dim == 40
    for i in (0, 7, 29):
        sl = frames.utterance(i)
        got = frames.spliced(torch.arange(sl.start, sl.stop), 20, 5).numpy()
        np.testing.assert_array_equal(got, splice(reader[frames.utts[i]], 20, 5))
    # a shuffled batch crossing utterances: each row is its own utterance's window
    idx = torch.randperm(len(frames), generator=torch.Generator().manual_seed(0))[:300]
    full = {i: splice(reader[u], 20, 5) for i, u in enumerate(frames.utts)}
    utt_of = np.searchsorted(frames.offsets, idx.numpy(), side="right") - 1
    want = np.stack([full[u][t - frames.offsets[u]] for u, t in zip(utt_of, idx.numpy())])
    np.testing.assert_array_equal(frames.spliced(idx, 20, 5).numpy(), want)


def test_average_posteriors_hand_computed():
    z1, z2, t = np.array([2.0, 0.0, -1.0]), np.array([0.0, 1.0, 3.0]), 2.0
    p1, p2 = np.exp(z1 / t) / np.exp(z1 / t).sum(), np.exp(z2 / t) / np.exp(z2 / t).sum()
    logits = [torch.from_numpy(z1[None]), torch.from_numpy(z2[None])]
    arith = average_posteriors(logits, t).exp().numpy()[0]
    np.testing.assert_allclose(arith, (p1 + p2) / 2, rtol=1e-6)
    geo = np.sqrt(p1 * p2)
    np.testing.assert_allclose(average_posteriors(logits, t, "geometric").exp().numpy()[0], geo / geo.sum(), rtol=1e-6)
    # one member at T=1 is its own softmax
    np.testing.assert_allclose(average_posteriors([torch.from_numpy(z1[None])]).exp().numpy()[0],
                               np.exp(z1) / np.exp(z1).sum(), rtol=1e-6)
    with pytest.raises(AsrkdError, match="unknown ensemble mean"):
        average_posteriors(logits, t, "median")


def test_distillation_gradient_is_temperature_invariant():
    """Hinton et al. eq. 3: at high T, d(KL)/dz ~ (z - v) / (N T^2); times T^2 it does not depend on T."""
    torch.manual_seed(0)
    n = 50
    v = torch.randn(1, n)
    v -= v.mean()
    z0 = torch.randn(1, n)
    z0 -= z0.mean()
    grads = {}
    for t in (5.0, 10.0, 20.0):
        q = torch.softmax(v / t, -1)
        ids = torch.arange(n)[None]
        z = z0.clone().requires_grad_(True)
        distillation_loss(z, ids, q, t).backward()
        grads[t] = z.grad[0]
    approx = (z0 - v)[0] / n
    err = {t: float((g - approx).norm() / approx.norm()) for t, g in grads.items()}
    assert err[5.0] < 0.25 and err[20.0] < 0.05, err
    assert 1.6 < err[5.0] / err[10.0] < 2.4 and 1.6 < err[10.0] / err[20.0] < 2.4, err  # first order in 1/T
    assert abs(float(grads[5.0].norm() / grads[20.0].norm()) - 1) < 0.1
    # and the loss is zero when the student matches the teacher
    assert distillation_loss(v, torch.arange(n)[None], torch.softmax(v / 2, -1), 2.0).abs() < 1e-6


def test_distillation_loss_is_kl_to_top_k_plus_even_tail():
    """The stored distribution is the teacher's top k plus the rest of its mass spread evenly;
    the loss is T^2 KL to it, and KL(dense || stored) is what make-soft-targets reports."""
    torch.manual_seed(0)
    n, k, t = 50, 5, 2.0
    v, z = 3 * torch.randn(3, n), torch.randn(3, n)
    ids, probs, kl = top_k(torch.log_softmax(v / t, -1), k)
    ids, probs = torch.from_numpy(ids).long(), torch.from_numpy(probs).float()
    stored = tail_probability(probs, n)[:, None].repeat(1, n).scatter(1, ids, probs)
    assert torch.allclose(stored.sum(1), torch.ones(3), atol=1e-6)
    direct = (t**2 * (stored * (stored.log() - torch.log_softmax(z / t, -1))).sum(1)).mean()
    assert torch.allclose(distillation_loss(z, ids, probs, t), direct, rtol=1e-5)
    dense = torch.softmax(v / t, -1)
    assert torch.allclose(kl, (dense * (dense.log() - stored.log())).sum(1), atol=1e-3)


def test_soft_targets_top_k_round_trip(yesno, tmp_path):
    torch.manual_seed(0)
    members = [SenoneDnn(40, 16, 16, 1, 20, 5).eval() for _ in range(2)]
    out = {t: tmp_path / f"soft_T{t:g}" for t in (1.0, 2.0)}
    info = make_soft_targets(members, yesno / "train_yesno", out, k=4)
    reader = FeatureReader(yesno / "train_yesno")
    utt = reader.keys()[3]
    for t, d in out.items():
        soft = SoftTargets(d)
        assert soft.temperature == t and info[t]["frames"] == sum(len(reader[u]) for u in reader.keys())
        ids, probs = soft.read(utt, len(reader[utt]))
        assert ids.dtype == np.uint16 and probs.dtype == np.float16 and ids.shape == (len(reader[utt]), 4)
        dense = average_posteriors([m.logits(reader[utt]) for m in members], t).exp().numpy()
        want = np.argsort(-dense, 1)[:, :4]
        np.testing.assert_array_equal(np.sort(ids, 1), np.sort(want, 1))
        kept = np.take_along_axis(dense, ids.astype(np.int64), 1)
        np.testing.assert_allclose(probs, kept, rtol=2e-3)  # the ensemble's own probabilities, float16
        assert (probs.astype(np.float32).sum(1) <= 1.002).all()
        assert 0 < info[t]["mean_topk_mass"] <= 1 and info[t]["bytes_topk"] < info[t]["bytes_dense_float32"]
        assert info[t]["kl_dense_vs_stored"] > 0
        with pytest.raises(AsrkdError, match="remake them"):
            soft.read(utt, len(reader[utt]) + 1)
    # higher T spreads the mass: the top 4 keep less of it
    assert info[2.0]["mean_topk_mass"] < info[1.0]["mean_topk_mass"]


def train_killed_after_first_epoch(monkeypatch, *args, **kwargs):
    """train_dnn(*args, **kwargs), killed right after its first checkpoint is written."""
    save = nnet_train.save_checkpoint

    def killed(*a, **kw):
        save(*a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(nnet_train, "save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        train_dnn(*args, **kwargs)
    monkeypatch.setattr(nnet_train, "save_checkpoint", save)


def test_training_learns_and_resumes_after_kill(frames, tmp_path, monkeypatch, caplog):
    cfg = dataclasses.replace(TINY, max_epochs=3)
    hist = train_dnn(cfg, frames, frames, 16, tmp_path / "clean", seed=3)
    assert hist[-1]["dev_frame_accuracy"] > 0.5  # 16 senones: chance is about 6%
    train_killed_after_first_epoch(monkeypatch, cfg, frames, frames, 16, tmp_path / "killed", seed=3)
    assert (tmp_path / "killed/checkpoint.pt").is_file() and not (tmp_path / "killed/final.pt").exists()
    # another config must not resume from it: one line names the key, and nothing is changed
    config = (tmp_path / "killed/nnet.yaml").read_text()
    with pytest.raises(AsrkdError, match=r"made with learning_rate=0.001 \(now 0.01\); rerun with --force"):
        train_dnn(dataclasses.replace(cfg, learning_rate=0.01), frames, frames, 16, tmp_path / "killed", seed=3)
    assert (tmp_path / "killed/nnet.yaml").read_text() == config
    caplog.set_level("INFO")
    train_dnn(cfg, frames, frames, 16, tmp_path / "killed", seed=3)
    assert "resuming after epoch 1" in caplog.text and not (tmp_path / "killed/checkpoint.pt").exists()
    a, b = (load_nnet(tmp_path / d).state_dict() for d in ("clean", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished model is skipped
    again = train_dnn(cfg, frames, frames, 16, tmp_path / "killed", seed=3)
    assert [h["dev_frame_accuracy"] for h in again] == [h["dev_frame_accuracy"] for h in hist]


def test_distillation_trains_on_soft_targets(yesno, yesno_mono, frames, tmp_path):
    ali = AlignmentDir(yesno_mono / "mono_ali")
    train_dnn(TINY, frames, frames, 16, tmp_path / "teacher", seed=0)
    make_soft_targets([load_nnet(tmp_path / "teacher")], yesno / "train_yesno", {2.0: tmp_path / "soft_T2"}, k=4)
    data = load_frames(yesno / "train_yesno", ali, [SoftTargets(tmp_path / "soft_T2")])
    assert data.soft_ids.shape == (1, len(data), 4) and (data.soft_probs.float().sum(2) <= 1.002).all()
    # nnet-forward's stored log posteriors are what the decoder computes on the fly
    proc = run_script("nnet-forward", "--nnet", str(tmp_path / "teacher"), str(yesno / "train_yesno"),
                      str(tmp_path / "post"))
    assert proc.returncode == 0, proc.stderr
    stored = PosteriorScorer([tmp_path / "post/logpost.scp"], np.zeros(16, np.float32))
    live = NnetScorer([tmp_path / "teacher"], yesno / "train_yesno")
    assert stored.keys() == live.keys()
    np.testing.assert_allclose(stored(live.keys()[0]), live(live.keys()[0]), atol=1e-5)
    cfg = dataclasses.replace(TINY, student_dropout=0.3)
    hist = train_dnn(cfg, data, frames, 16, tmp_path / "student", distill=True)
    assert hist[-1]["dev_frame_accuracy"] > 0.5
    # members use `dropout`, students `student_dropout`
    assert [load_nnet(tmp_path / d).arch["dropout"] for d in ("teacher", "student")] == [0.1, 0.3]
    with pytest.raises(AsrkdError, match="needs soft targets"):
        train_dnn(TINY, frames, frames, 16, tmp_path / "nope", distill=True)


def test_teacher_switching(yesno, yesno_mono, frames, tmp_path):
    """Each member's own soft targets, one teacher per minibatch: in expectation the gradient of
    the arithmetic ensemble's KD loss (the KL is linear in the target), and a student learns."""
    torch.manual_seed(0)
    n, t = 12, 2.0
    members = [torch.randn(5, n) * 3 for _ in range(3)]
    z, ids = torch.randn(5, n), torch.arange(n).repeat(5, 1)

    def grad(targets):
        zz = z.clone().requires_grad_(True)
        distillation_loss(zz, ids, targets, t).backward()
        return zz.grad

    switched = sum(grad(torch.softmax(m / t, -1)) for m in members) / len(members)
    averaged = grad(average_posteriors(members, t).exp())
    assert torch.allclose(switched, averaged, atol=1e-6)
    assert not torch.allclose(grad(torch.softmax(members[0] / t, -1)), averaged, atol=1e-3)

    teachers = []
    for seed in (0, 1):
        train_dnn(TINY, frames, frames, 16, tmp_path / f"m{seed}", seed=seed)
        teachers.append(load_nnet(tmp_path / f"m{seed}"))
    out = {(t, k): (t, tmp_path / f"soft_T2_member_{k}", k) for k in range(2)} | {t: tmp_path / "soft_T2"}
    info = make_soft_targets(teachers, yesno / "train_yesno", out, k=4)
    assert [info[(t, k)]["member"] for k in range(2)] == [0, 1] and info[t]["members"] == 2
    reader = FeatureReader(yesno / "train_yesno")
    utt = reader.keys()[0]
    own = SoftTargets(tmp_path / "soft_T2_member_1").read(utt, len(reader[utt]))[0]
    want = np.argsort(-teachers[1].logits(reader[utt]).numpy(), 1)[:, :4]
    np.testing.assert_array_equal(np.sort(own, 1), np.sort(want, 1))
    data = load_frames(yesno / "train_yesno", AlignmentDir(yesno_mono / "mono_ali"),
                       [SoftTargets(tmp_path / f"soft_T2_member_{k}") for k in range(2)])
    assert data.soft_ids.shape == (2, len(data), 4)
    hist = train_dnn(TINY, data, frames, 16, tmp_path / "switched", distill=True)
    assert hist[-1]["dev_frame_accuracy"] > 0.5


def test_teachers_run_on_mixed_up_windows(yesno, yesno_mono, frames, tmp_path, monkeypatch):
    """Online teachers: the dense KD loss is the stored one with every senone kept; mixup mixes
    each window with one other; the student learns from teachers run on the mix, and resumes."""
    torch.manual_seed(0)
    n, t = 12, 2.0
    v, z = 3 * torch.randn(4, n), torch.randn(4, n)
    logq = average_posteriors([v], t)
    assert torch.allclose(dense_distillation_loss(z, logq, t),
                          distillation_loss(z, torch.arange(n).repeat(4, 1), logq.exp(), t), rtol=1e-5)
    x = torch.arange(8.0)[:, None].repeat(1, 3)
    mixed, lam, perm = mixup(x, 1.0)
    assert sorted(perm.tolist()) == list(range(8)) and ((lam >= 0) & (lam <= 1)).all()
    assert torch.allclose(mixed, lam[:, None] * x + (1 - lam[:, None]) * x[perm])

    train_dnn(TINY, frames, frames, 16, tmp_path / "m0", seed=0)
    teachers = [load_nnet(tmp_path / "m0")]
    seen = []
    online = nnet_losses.online_loss
    monkeypatch.setattr(nnet_losses, "online_loss", lambda logits, x, *a: seen.append(x) or online(logits, x, *a))
    cfg = dataclasses.replace(TINY, teacher_mixup=1.0, hard_weight=0.1)
    hist = train_dnn(cfg, frames, frames, 16, tmp_path / "student", teachers=teachers)
    assert hist[-1]["dev_frame_accuracy"] > 0.5
    first = frames.spliced(torch.arange(len(frames)), TINY.left_context, TINY.right_context)
    unseen = torch.cdist(seen[0].float(), first).min(1).values > 1e-3  # the teachers saw mixed windows
    assert unseen.float().mean() > 0.9
    # killed after epoch 1, it resumes to the same weights
    train_killed_after_first_epoch(monkeypatch, cfg, frames, frames, 16, tmp_path / "killed", teachers=teachers)
    train_dnn(cfg, frames, frames, 16, tmp_path / "killed", teachers=teachers)
    a, b = (load_nnet(tmp_path / d).state_dict() for d in ("student", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # train-dnn --teacher-nnet M --temperature 1: the student distils at T = 1
    sets = [yesno / "train_yesno", yesno_mono / "mono_ali"] * 2
    nnet_train.train_model(cfg, *sets, tmp_path / "at_T1", teacher_dirs=[tmp_path / "m0"], temperature=1.0)
    assert load_config(NnetConfig, tmp_path / "at_T1/nnet.yaml").temperature == 1.0


def test_config_and_checkpoint_errors(tmp_path):
    conf = tmp_path / "nnet.yaml"
    conf.write_text("hidden: 64\nlayers: 3\n")
    cfg = load_config(NnetConfig, conf)
    assert (cfg.hidden, cfg.layers, cfg.dropout) == (64, 3, NnetConfig().dropout)
    conf.write_text("hiden: 64\n")
    with pytest.raises(AsrkdError, match=r"unknown options \['hiden'\]"):
        load_config(NnetConfig, conf)
    conf.write_text("hidden: wide\n")
    with pytest.raises(AsrkdError, match="'hidden' must be int"):
        load_config(NnetConfig, conf)
    conf.write_text("student_dropout: 1.0\n")
    with pytest.raises(AsrkdError, match="must be in \\[0, 1\\)"):
        load_config(NnetConfig, conf)
    conf.write_text("temperatures: [1, 2]\ntemperature: 5\n")
    with pytest.raises(AsrkdError, match="not among the soft-target temperatures"):
        load_config(NnetConfig, conf)
    with pytest.raises(AsrkdError, match="config file not found"):
        load_config(NnetConfig, tmp_path / "nope.yaml")
    ckpt = tmp_path / "c.pt"
    save_checkpoint(ckpt, {"x": torch.ones(2)}, {"data": "abc"})
    assert torch.equal(load_checkpoint(ckpt, {"data": "abc"})["x"], torch.ones(2))
    with pytest.raises(AsrkdError, match="was made with data='abc'"):
        load_checkpoint(ckpt, {"data": "xyz"})
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(AsrkdError, match="not a readable asrkd checkpoint"):
        load_checkpoint(ckpt)
    with pytest.raises(AsrkdError, match="not a neural model file"):
        save_checkpoint(tmp_path / "m/final.pt", {"means": torch.zeros(1)}, {"kind": "gmm"})
        load_nnet(tmp_path / "m")


def test_select_model_links_the_best_on_dev(tmp_path):
    net = SenoneDnn(40, 8, 8, 1, 2, 2)
    for name, acc in (("student_T1", 0.15), ("student_T2", 0.16), ("student_T5", 0.155)):
        save_nnet(tmp_path / name / "final.pt", net, {"dev_frame_accuracy": acc, "epoch": 3})
    dirs = [tmp_path / f"student_T{t}" for t in (1, 2, 5)]
    link = tmp_path / "distilled"
    assert select_model(dirs, link) == dirs[1]
    assert link.is_symlink() and str(link.readlink()) == "student_T2" and (link / "final.pt").is_file()
    assert select_model([dirs[0], dirs[2]], link) == dirs[2] and str(link.readlink()) == "student_T5"  # relinked
    (tmp_path / "real").mkdir()
    with pytest.raises(AsrkdError, match="is not a symlink"):
        select_model(dirs, tmp_path / "real")

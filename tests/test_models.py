"""The model registry: a second architecture (a TDNN) trains as an ensemble member beside a
DNN (`member_archs`), makes soft targets with it, and teaches a DNN student from stored soft
targets and online."""

import json

import pytest
import torch
import yaml

from asrkd.cli import main
from asrkd.decode.decoder import NnetScorer
from asrkd.decode.score import ensemble_frame_accuracy
from asrkd.features import FeatureReader
from asrkd.hmm.alignment import AlignmentDir
from asrkd.nnet.config import NnetConfig
from asrkd.nnet.model import MODELS, build_model, load_nnet
from asrkd.nnet.soft_targets import make_soft_targets
from asrkd.nnet.tdnn import Tdnn
from asrkd.nnet.train import train_model
from asrkd.utils import AsrkdError

SMALL = dict(hidden=32, layers=2, left_context=6, right_context=6, dropout=0.1, batch_size=256, max_epochs=3,
             precision="fp32", temperatures=[2.0], top_k=4)


def test_tdnn_shapes_and_cost():
    net = build_model("tdnn", 40, 16, 32, 3, 10, 5, 0.0)
    assert isinstance(net, Tdnn) and net.frames == 16 - 2 * (1 + 2 + 3)
    x = torch.randn(7, 16 * 40)
    assert net(x).shape == (7, 16)
    assert net.flops_per_frame() == 2 * (40 * 32 * 3 * 14 + 32 * 32 * 3 * 10 + 32 * 32 * 3 * 4 + 32 * 4 * 16)
    with pytest.raises(AsrkdError, match="spans 13 frames, more than the window of 7"):
        build_model("tdnn", 40, 16, 32, 3, 3, 3, 0.0)
    with pytest.raises(AsrkdError, match="arch must be one of"):
        NnetConfig(arch="lstm")
    assert set(MODELS) >= {"dnn", "tdnn"}


def test_mixed_ensemble_teaches_a_dnn(yesno, yesno_mono, tmp_path):
    """Members of two architectures and sizes (member_archs: dnn, a narrower tdnn) through train-ensemble: each kind
    trains, both make the soft targets, the ensemble's frame accuracy is split by kind, and a
    DNN student learns from the stored soft targets and from the TDNN online."""
    data, ali = yesno / "train_yesno", yesno_mono / "mono_ali"
    (tmp_path / "mixed.yaml").write_text(yaml.safe_dump({**SMALL, "num_members": 2,
                                                               "member_archs": ["dnn", {"arch": "tdnn", "hidden": 24}]}))
    main(["train-ensemble", "--config", str(tmp_path / "mixed.yaml"), "--device", "cpu", str(data), str(ali),
          str(data), str(ali), str(tmp_path / "nnet")])
    members = [load_nnet(tmp_path / f"nnet/member_{k}") for k in (0, 1)]
    assert [m.arch["type"] for m in members] == ["dnn", "tdnn"] and isinstance(members[1], Tdnn)
    assert [m.arch["hidden"] for m in members] == [32, 24]
    hist = json.loads((tmp_path / "nnet/member_1/log/train.json").read_text())
    assert hist[-1]["dev_frame_accuracy"] > 0.5  # 16 senones: chance is about 6%
    reader = FeatureReader(data)
    feats = reader[reader.keys()[0]]
    assert members[1].log_posteriors(feats).shape == (len(feats), 16)
    fa = ensemble_frame_accuracy(NnetScorer([tmp_path / f"nnet/member_{k}" for k in (0, 1)], data),
                                 AlignmentDir(ali), [tmp_path / f"nnet/member_{k}" for k in (0, 1)])
    assert [m["arch"] for m in fa["members"]] == ["dnn", "tdnn"]
    for k, arch in enumerate(("dnn", "tdnn")):  # an architecture's ensemble of one is that member
        assert fa["by_arch"][arch]["frame_accuracy"] == fa["members"][k]["frame_accuracy"]
    make_soft_targets(members, data, {2.0: tmp_path / "soft_T2"}, k=4,
                      sources={f"nnet_{k}": tmp_path / f"nnet/member_{k}" for k in (0, 1)})
    assert json.loads((tmp_path / "soft_T2/info.json").read_text())["environment"]["cpu_capability"]
    dnn = NnetConfig(**SMALL)
    stored = train_model(dnn, data, ali, data, ali, tmp_path / "student", soft_dirs=[tmp_path / "soft_T2"],
                         device="cpu")
    online = train_model(dnn, data, ali, data, ali, tmp_path / "online", teacher_dirs=[tmp_path / "nnet/member_1"],
                         device="cpu")
    for name, h in (("student", stored), ("online", online)):
        assert h[-1]["dev_frame_accuracy"] > 0.5 and load_nnet(tmp_path / name).arch["type"] == "dnn"
    with pytest.raises(AsrkdError, match="member_archs: 'lstm' is not registered"):
        NnetConfig(member_archs=["dnn", "lstm"])
    with pytest.raises(AsrkdError, match="give an architecture's name or a mapping with arch"):
        NnetConfig(member_archs=[{"arch": "tdnn", "width": 3}])
    with pytest.raises(AsrkdError, match=r"member_archs hidden must be in \[1, inf\), got 0"):
        NnetConfig(member_archs=[{"arch": "tdnn", "hidden": 0}])
    with pytest.raises(AsrkdError, match="'layers' must be int"):
        NnetConfig(member_archs=[{"arch": "tdnn", "layers": "4"}])


def test_loss_must_fit_the_targets(yesno, yesno_mono, tmp_path):
    data, ali = yesno / "train_yesno", yesno_mono / "mono_ali"
    with pytest.raises(AsrkdError, match="loss 'kd' does not fit the run's targets"):
        train_model(NnetConfig(**SMALL, loss="kd"), data, ali, data, ali, tmp_path / "kd", device="cpu")
    with pytest.raises(AsrkdError, match="loss 'nope' is not registered"):
        train_model(NnetConfig(**SMALL, loss="nope"), data, ali, data, ali, tmp_path / "nope", device="cpu")

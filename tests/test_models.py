"""The model registry: a second architecture (a TDNN) trains through `train-dnn`, makes soft
targets, and teaches a DNN student from stored soft targets and online."""

import json

import pytest
import torch
import yaml

from asrkd.cli import main
from asrkd.features import FeatureReader
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


def test_tdnn_trains_teaches_and_is_distilled(yesno, yesno_mono, tmp_path):
    data, ali = yesno / "train_yesno", yesno_mono / "mono_ali"
    (tmp_path / "tdnn.yaml").write_text(yaml.safe_dump({**SMALL, "arch": "tdnn"}))
    main(["train-dnn", "--config", str(tmp_path / "tdnn.yaml"), "--device", "cpu", str(data), str(ali), str(data),
          str(ali), str(tmp_path / "tdnn")])
    teacher = load_nnet(tmp_path / "tdnn")
    assert isinstance(teacher, Tdnn) and teacher.arch["type"] == "tdnn"
    hist = json.loads((tmp_path / "tdnn/log/train.json").read_text())
    assert hist[-1]["dev_frame_accuracy"] > 0.5  # 16 senones: chance is about 6%
    reader = FeatureReader(data)
    feats = reader[reader.keys()[0]]
    assert teacher.log_posteriors(feats).shape == (len(feats), 16)
    make_soft_targets([teacher], data, {2.0: tmp_path / "soft_T2"}, k=4, sources={"nnet_0": tmp_path / "tdnn"})
    assert json.loads((tmp_path / "soft_T2/info.json").read_text())["environment"]["cpu_capability"]
    dnn = NnetConfig(**SMALL)
    stored = train_model(dnn, data, ali, data, ali, tmp_path / "student", soft_dirs=[tmp_path / "soft_T2"],
                         device="cpu")
    online = train_model(dnn, data, ali, data, ali, tmp_path / "online", teacher_dirs=[tmp_path / "tdnn"],
                         device="cpu")
    for name, h in (("student", stored), ("online", online)):
        assert h[-1]["dev_frame_accuracy"] > 0.5 and load_nnet(tmp_path / name).arch["type"] == "dnn"


def test_loss_must_fit_the_targets(yesno, yesno_mono, tmp_path):
    data, ali = yesno / "train_yesno", yesno_mono / "mono_ali"
    with pytest.raises(AsrkdError, match="loss 'kd' does not fit the run's targets"):
        train_model(NnetConfig(**SMALL, loss="kd"), data, ali, data, ali, tmp_path / "kd", device="cpu")
    with pytest.raises(AsrkdError, match="loss 'nope' is not registered"):
        train_model(NnetConfig(**SMALL, loss="nope"), data, ali, data, ali, tmp_path / "nope", device="cpu")

"""Frame-level senone classifiers over a window of fbank frames (20 left, 5 right of the
target frame): the registry of architectures (`arch:` in the nnet config), their common
base, and Hinton et al.'s (2015) speech DNN. A model file (`final.pt`) holds the weights,
the architecture and the environment it was trained in; `load_nnet` rebuilds it.

A new architecture is a `SenoneModel` subclass in a file of its own, taking
(feat_dim, num_senones, hidden, layers, left, right, dropout), plus one line in `MODELS`."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asrkd.checkpoint import load_checkpoint, save_checkpoint
from asrkd.features import splice
from asrkd.utils import AsrkdError


class Dropout(nn.Module):
    """Inverted dropout with the mask drawn from random bytes: a kept unit has a byte >=
    round(256 p). The bytes are the low 7 of each 63-bit draw of the global RNG. On CPU this is
    3x faster than nn.Dropout's Bernoulli sampling, which took half the forward pass of the
    1024 x 4 DNN."""

    def __init__(self, p: float):
        super().__init__()
        self.p, self.threshold = p, round(256 * p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        n = x.numel()
        words = torch.empty((n + 6) // 7, dtype=torch.int64, device=x.device).random_()  # in [0, 2^63)
        uniform = words.view(torch.uint8).view(-1, 8)[:, :7].reshape(-1)[:n]  # the top byte is < 128
        keep = uniform.view(x.shape) >= self.threshold
        return x * keep.to(x.dtype) * (256 / (256 - self.threshold))


# name in the nnet config's `arch:` -> "module:class"
MODELS = {"dnn": "asrkd.nnet.model:SenoneDnn", "tdnn": "asrkd.nnet.tdnn:Tdnn"}


def model_class(name: str) -> type:
    """The `SenoneModel` subclass registered as `name`."""
    if name not in MODELS:
        raise AsrkdError(f"arch {name!r} is not registered (known: {', '.join(MODELS)})")
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


class SenoneModel(nn.Module):
    """Spliced frames [B, (left+1+right)*feat_dim] -> senone logits [B, num_senones].
    `arch` holds the constructor's arguments and the registry name (`type`)."""

    type = ""
    info: dict = {}  # what training recorded (final.pt's `info`, set by `load_nnet`); none for a new model

    def __init__(self, feat_dim: int, num_senones: int, hidden: int, layers: int, left: int, right: int,
                 dropout: float):
        super().__init__()
        self.arch = dict(feat_dim=feat_dim, num_senones=num_senones, hidden=hidden, layers=layers,
                         left=left, right=right, dropout=dropout, type=self.type)
        self.feat_dim, self.left, self.right = feat_dim, left, right

    @torch.no_grad()
    def logits(self, feats: np.ndarray, chunk: int = 4096, bf16: bool = False) -> torch.Tensor:
        """[T, D] CMVN'd fbank of one utterance -> [T, num_senones] float32 logits."""
        x = torch.from_numpy(splice(feats, self.left, self.right))
        dev = next(self.parameters()).device
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            return torch.cat([self(x[i:i + chunk].to(dev)).float().cpu() for i in range(0, len(x), chunk)])

    def log_posteriors(self, feats: np.ndarray, chunk: int = 4096, bf16: bool = False) -> np.ndarray:
        """[T, D] CMVN'd fbank -> [T, num_senones] log posteriors (float32)."""
        return torch.log_softmax(self.logits(feats, chunk, bf16), -1).numpy()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_frame(self) -> int:
        """Multiply-adds x 2 of one forward pass."""
        raise NotImplementedError


class SenoneDnn(SenoneModel):
    """ReLU MLP over the spliced window (dropout after each hidden layer). The paper's network
    is 8 hidden layers of 2560 units over 14,000 senones (about 85M weights)."""

    type = "dnn"

    def __init__(self, feat_dim: int, num_senones: int, hidden: int = 2560, layers: int = 8,
                 left: int = 20, right: int = 5, dropout: float = 0.0):
        super().__init__(feat_dim, num_senones, hidden, layers, left, right, dropout)
        dims = [(left + 1 + right) * feat_dim] + [hidden] * layers
        blocks = []
        for i, o in zip(dims, dims[1:]):
            blocks += [nn.Linear(i, o), nn.ReLU()] + ([Dropout(dropout)] if dropout > 0 else [])
        self.body = nn.Sequential(*blocks, nn.Linear(dims[-1], num_senones))

    def forward(self, spliced: torch.Tensor) -> torch.Tensor:
        return self.body(spliced)

    def flops_per_frame(self) -> int:
        return 2 * sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))


def build_model(arch: str, feat_dim: int, num_senones: int, hidden: int, layers: int, left: int, right: int,
                dropout: float) -> SenoneModel:
    """A new model of the registered architecture `arch`."""
    return model_class(arch)(feat_dim, num_senones, hidden, layers, left, right, dropout)


def save_nnet(path: str | Path, model: SenoneModel, info: dict | None = None, env: dict | None = None) -> None:
    """A model file: weights (float32, CPU), architecture, `info` (epoch, dev accuracy...) and
    `env`, the environment it was trained in (default: this process's, on the CPU)."""
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(path, {"model": state, "arch": model.arch, "info": info or {}}, {"kind": "senone_dnn"}, env)


def _load(model_dir: str | Path) -> dict:
    path = Path(model_dir) / "final.pt"
    state = load_checkpoint(path)
    if state.get("meta", {}).get("kind") != "senone_dnn":
        raise AsrkdError(f"{path}: not a neural model file (train it with `asrkd train-dnn`)")
    return state


def model_info(model_dir: str | Path) -> dict:
    """What training recorded in a model dir's `final.pt`: best epoch, its dev frame accuracy, seed."""
    return _load(model_dir)["info"]


def load_nnet(model_dir: str | Path, device: str = "cpu") -> SenoneModel:
    """The model of a model dir's `final.pt` (of the architecture it names), in eval mode;
    `.info` is what training recorded (best epoch, seed, the fingerprint of its alignment's tree)."""
    state = _load(model_dir)
    arch = dict(state["arch"])
    model = model_class(arch.pop("type", "dnn"))(**arch)
    model.load_state_dict(state["model"])
    model.info = state["info"]
    return model.to(device).eval()

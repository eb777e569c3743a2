"""Frame-level senone classifiers: Hinton et al.'s (2015) speech DNN, a window of fbank
frames (20 left, 5 right of the target frame) through ReLU layers to senone logits."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from asrkd.features import splice


class SenoneDnn(nn.Module):
    """Spliced frames [B, (left+1+right)*feat_dim] -> ReLU MLP -> senone logits [B, num_senones].
    The paper's network is 8 hidden layers of 2560 units over 14,000 senones (about 85M weights)."""

    def __init__(self, feat_dim: int, num_senones: int, hidden: int = 2560, layers: int = 8,
                 left: int = 20, right: int = 5):
        super().__init__()
        self.feat_dim, self.left, self.right = feat_dim, left, right
        dims = [(left + 1 + right) * feat_dim] + [hidden] * layers
        blocks = []
        for i, o in zip(dims, dims[1:]):
            blocks += [nn.Linear(i, o), nn.ReLU()]
        self.body = nn.Sequential(*blocks, nn.Linear(dims[-1], num_senones))

    def forward(self, spliced: torch.Tensor) -> torch.Tensor:
        return self.body(spliced)

    @torch.no_grad()
    def log_posteriors(self, feats: np.ndarray, chunk: int = 2048) -> np.ndarray:
        """[T, D] CMVN'd fbank of one utterance -> [T, num_senones] log posteriors (float32)."""
        x = torch.from_numpy(splice(feats, self.left, self.right))
        return torch.cat([torch.log_softmax(self(x[i:i + chunk]), -1) for i in range(0, len(x), chunk)]).numpy()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

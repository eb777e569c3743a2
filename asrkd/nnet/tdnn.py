"""A time-delay neural network (Waibel et al. 1989; Peddinti et al. 2015), the standard
hybrid acoustic model: dilated 1-D convolutions over the spliced window's frames, so the
lower layers see short spans and the upper ones wider spans, then a linear layer from the
frames that remain to the senone logits."""

from __future__ import annotations

import torch
from torch import nn

from asrkd.nnet.model import Dropout, SenoneModel
from asrkd.utils import AsrkdError

DILATIONS = (1, 2, 3, 3, 3, 3, 3, 3)  # kernel 3; layer i looks +-DILATIONS[i] frames further


class Tdnn(SenoneModel):
    """`layers` convolutions of `hidden` channels (kernel 3, dilations 1, 2, 3, 3, ...), each
    with ReLU and dropout, over the (left + 1 + right)-frame window, then a linear layer."""

    type = "tdnn"

    def __init__(self, feat_dim: int, num_senones: int, hidden: int = 512, layers: int = 4,
                 left: int = 20, right: int = 5, dropout: float = 0.0):
        super().__init__(feat_dim, num_senones, hidden, layers, left, right, dropout)
        if not 1 <= layers <= len(DILATIONS):
            raise AsrkdError(f"a tdnn has 1 to {len(DILATIONS)} layers, got {layers}")
        self.frames = left + 1 + right - 2 * sum(DILATIONS[:layers])
        if self.frames < 1:
            raise AsrkdError(f"a {layers}-layer tdnn spans {2 * sum(DILATIONS[:layers]) + 1} frames, more than the "
                             f"window of {left + 1 + right}: widen left_context/right_context or use fewer layers")
        blocks, channels = [], feat_dim
        for d in DILATIONS[:layers]:
            blocks += [nn.Conv1d(channels, hidden, 3, dilation=d), nn.ReLU()] + ([Dropout(dropout)] if dropout > 0 else [])
            channels = hidden
        self.body = nn.Sequential(*blocks)
        self.out = nn.Linear(hidden * self.frames, num_senones)

    def forward(self, spliced: torch.Tensor) -> torch.Tensor:
        x = spliced.view(len(spliced), -1, self.feat_dim).transpose(1, 2)  # [B, D, frames of the window]
        return self.out(self.body(x).flatten(1))

    def flops_per_frame(self) -> int:
        convs = [m for m in self.body if isinstance(m, nn.Conv1d)]
        span, total = self.left + 1 + self.right, 0
        for conv in convs:  # each output frame of a layer costs one kernel's multiply-adds
            span -= 2 * conv.dilation[0]
            total += conv.weight.numel() * span
        return 2 * (total + self.out.weight.numel())

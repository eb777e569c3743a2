"""The neural recipe's options (`conf/nnet.yaml`): network, training, ensemble, soft
targets and distillation. The paper's values are noted; the CPU defaults are sized to 2 cores."""

from __future__ import annotations

from dataclasses import dataclass, field

from asrkd.utils import AsrkdError


@dataclass
class NnetConfig:
    # network: ReLU DNN over a window of fbank frames (paper: 8 x 2560, 20 left / 5 right)
    hidden: int = 1024
    layers: int = 4
    left_context: int = 20
    right_context: int = 5
    dropout: float = 0.2
    # training: Adam, dev frame accuracy each epoch, LR halved when it gains < min_improvement
    batch_size: int = 512
    learning_rate: float = 0.001
    max_epochs: int = 8
    min_improvement: float = 0.002
    max_halvings: int = 2  # stop at the halving after this many
    precision: str = "bf16"  # bf16 autocast (AMX / tensor cores) or fp32
    # ensemble: members differ only in seed (paper: 10); member 0 is the baseline
    num_members: int = 4
    # soft targets: mean over members of softmax(z/T), top-k stored (paper: T in 1, 2, 5, 10)
    temperatures: list[float] = field(default_factory=lambda: [1.0, 2.0, 5.0])
    top_k: int = 20
    ensemble_mean: str = "arithmetic"  # or geometric
    # distillation: T^2 KL(soft_T || student_T) + hard_weight * CE(hard); paper: hard weight 0.5
    temperature: float = 2.0
    hard_weight: float = 0.5
    student_dropout: float = 0.0  # the soft targets regularise a student (paper section 6)
    # distilling from teacher models run on each minibatch (train-dnn --teacher-nnet): pairs of
    # windows mixed with weights from Beta(a, a) first (mixup; 0: none), the teachers see the mix
    teacher_mixup: float = 0.0

    def __post_init__(self):
        if self.precision not in ("bf16", "fp32"):
            raise AsrkdError(f"precision must be bf16 or fp32, not {self.precision!r}")
        if self.ensemble_mean not in ("arithmetic", "geometric"):
            raise AsrkdError(f"ensemble_mean must be arithmetic or geometric, not {self.ensemble_mean!r}")
        if self.temperature not in self.temperatures:
            raise AsrkdError(f"the distillation temperature {self.temperature} is not among the soft-target "
                             f"temperatures {self.temperatures}")
        if self.teacher_mixup < 0:
            raise AsrkdError("teacher_mixup must be >= 0")
        if not (0 <= self.dropout < 1 and 0 <= self.student_dropout < 1):
            raise AsrkdError("dropout and student_dropout must be in [0, 1)")
        if min(self.hidden, self.layers, self.batch_size, self.max_epochs, self.num_members, self.top_k) < 1:
            raise AsrkdError("hidden, layers, batch_size, max_epochs, num_members and top_k must be >= 1")

    def model_dropout(self, student: bool) -> float:
        """The dropout of a student (trained on soft targets) or of a hard-target model."""
        return self.student_dropout if student else self.dropout

"""The neural recipe's options (`conf/nnet.yaml`): network, training, ensemble, soft
targets and distillation. The paper's values are noted; the CPU defaults are sized to 2 cores."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from asrkd.config import check_type
from asrkd.nnet.model import MODELS
from asrkd.utils import AsrkdError

LATER_KEYS = ("train_data", "shuffle_buffer", "member_archs")  # see NnetConfig.record_options
MEMBER_KEYS = {"arch": str, "hidden": int, "layers": int, "dropout": float}  # what a member_archs mapping may set
RANGES = {  # key: (low, high, low included, high included)
    "hidden": (1, None, True, None), "layers": (1, None, True, None), "batch_size": (1, None, True, None),
    "max_epochs": (1, None, True, None), "num_members": (1, None, True, None), "top_k": (1, None, True, None),
    "shuffle_buffer": (1, None, True, None),
    "left_context": (0, None, True, None), "right_context": (0, None, True, None),
    "max_halvings": (0, None, True, None), "learning_rate": (0, None, False, None),
    "min_improvement": (0, None, True, None), "teacher_mixup": (0, None, True, None),
    "dropout": (0, 1, True, False), "student_dropout": (0, 1, True, False),
    "hard_weight": (0, 1, True, True), "temperature": (0, None, False, None)}


@dataclass
class NnetConfig:
    # network over a window of fbank frames: `arch` names a registered architecture
    # (asrkd.nnet.model.MODELS: dnn, the paper's ReLU DNN of 8 x 2560, 20 left / 5 right; tdnn)
    arch: str = "dnn"
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
    precision: str = "auto"  # bf16 autocast, fp32, or auto: bf16 where the hardware has it (AMX, AVX512-BF16, GPU)
    # ensemble: members differ in seed (paper: 10); member 0 is the baseline. member_archs:
    # the members' architectures in turn (member k: member_archs[k % len]), each a registered
    # name or a mapping of MEMBER_KEYS, e.g. [dnn, {arch: tdnn, hidden: 256}] for teachers of
    # two kinds and sizes; empty: every member is `arch`, as the students always are
    num_members: int = 4
    member_archs: list = field(default_factory=list)
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
    # the loss (asrkd.nnet.losses.LOSSES); auto: ce for hard targets, kd for stored soft
    # targets, online_kd for teacher models
    loss: str = "auto"
    # where the training frames live: ram (load_frames: all in memory), stream (read from the
    # archives each epoch through a shuffle buffer of `shuffle_buffer` frames), or auto: ram
    # when the estimated size, times the ranks per machine, is at most half the available memory
    train_data: str = "auto"
    shuffle_buffer: int = 500_000

    def __post_init__(self):
        choices = {"precision": ("auto", "bf16", "fp32"), "ensemble_mean": ("arithmetic", "geometric"),
                   "arch": tuple(MODELS), "train_data": ("auto", "ram", "stream")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise AsrkdError(f"{key} must be one of {', '.join(allowed)}, not {getattr(self, key)!r}")
        for key, (low, high, low_in, high_in) in RANGES.items():
            check_range(key, getattr(self, key), low, high, low_in, high_in)
        for t in self.temperatures:
            check_range("temperatures", t, 0, None, False, None)
        for m in self.member_archs:
            check_member(m)
        if self.temperature not in self.temperatures:
            raise AsrkdError(f"the distillation temperature {self.temperature} is not among the soft-target "
                             f"temperatures {self.temperatures}")

    def member_config(self, k: int) -> "NnetConfig":
        """The config of ensemble member k: its architecture (and size) from `member_archs`, which
        it does not keep, so that a member is the same model in any ensemble that has it."""
        if not self.member_archs:
            return self
        return replace(self, member_archs=[], **member_overrides(self.member_archs[k % len(self.member_archs)]))

    def record_options(self) -> dict:
        """The keys as a model's record and checkpoint keep them: keys added since models were
        first recorded are left out at their defaults, so those models still match."""
        default = NnetConfig()
        return {k: v for k, v in asdict(self).items() if not (k in LATER_KEYS and v == getattr(default, k))}

    def model_dropout(self, student: bool) -> float:
        """The dropout of a student (trained on soft targets) or of a hard-target model."""
        return self.student_dropout if student else self.dropout


def member_overrides(m) -> dict:
    """The keys a `member_archs` entry sets: a name sets `arch`, a mapping its own keys."""
    return m if isinstance(m, dict) else {"arch": m}


def check_member(m) -> None:
    """One-line error for a `member_archs` entry that is not a registered architecture or a
    mapping of MEMBER_KEYS (with `arch`) whose values are in range."""
    over = member_overrides(m)
    if not over.keys() <= MEMBER_KEYS.keys() or "arch" not in over:
        raise AsrkdError(f"member_archs: {m!r}: give an architecture's name or a mapping with arch and any of "
                         "hidden, layers, dropout")
    over = {k: check_type("member_archs", k, v, MEMBER_KEYS[k]) for k, v in over.items()}
    if over["arch"] not in MODELS:
        raise AsrkdError(f"member_archs: {over['arch']!r} is not registered (known: {', '.join(MODELS)})")
    for key in over.keys() - {"arch"}:
        check_range(f"member_archs {key}", over[key], *RANGES[key])


def check_range(key: str, value, low, high=None, low_in: bool = True, high_in: bool = True) -> None:
    """One-line error naming `key` when `value` lies outside [low, high] (bounds open where not `_in`)."""
    below = value < low if low_in else value <= low
    above = high is not None and (value > high if high_in else value >= high)
    if below or above or value != value:  # NaN
        interval = f"{'[' if low_in else '('}{low}, {'inf)' if high is None else f'{high}' + (']' if high_in else ')')}"
        raise AsrkdError(f"{key} must be in {interval}, got {value}")

"""The layout of a recipe's neural experiment dir (`exp/nnet`): the one place that names its
dirs and files. What a dir holds (a member's seed, a student's or soft targets' temperature)
is read from the dir's own metadata (`final.pt`, `nnet.yaml`, `info.json`), never from its
name; copies beside the results (`student_T2.bak`, `.soft_T1.tmp`) are not results.

    exp/nnet/member_<k>/              ensemble member k (seed k); member_0 is the baseline
    exp/nnet/ensemble/                the ensemble's frame accuracy (frame-accuracy --per-member)
    exp/nnet/soft_T<T>/               the ensemble's soft targets at temperature T
    exp/nnet/soft_T<T>_member_<k>/    member k's own soft targets (teacher switching)
    exp/nnet/student_T<T>/            the student distilled at T (temperature sweep)
    exp/nnet/distilled -> student_T<T>  the student chosen on the tuning set (select-model)
    exp/nnet/student_mixup/           the student of the members run on mixed-up windows
    exp/nnet/switched/                the student of teacher switching
    exp/nnet/subset_{hard,soft,mixup}/  paper section 6 on a subset of train
    <model dir>/frame_accuracy_<set>.json, <model dir>/decode_<set>/
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from asrkd.config import load_config
from asrkd.nnet.config import NnetConfig
from asrkd.nnet.model import model_info
from asrkd.utils import read_json

def decode_dir(model_dir: str | Path, data_set: str) -> Path:
    return Path(model_dir) / f"decode_{data_set}"


def frame_accuracy_file(model_dir: str | Path, data_set: str) -> Path:
    return Path(model_dir) / f"frame_accuracy_{data_set}.json"



def _config_value(model_dir: Path, key: str):
    """A key of the config a model was trained with (its `nnet.yaml`)."""
    return getattr(load_config(NnetConfig, model_dir / "nnet.yaml"), key)


@dataclass
class NnetExpDir:
    """`exp/nnet` of a recipe."""

    root: Path

    def __post_init__(self):
        self.root = Path(self.root)

    def _dirs(self, pattern: str) -> list[Path]:
        return sorted(d for d in self.root.iterdir() if d.is_dir() and re.fullmatch(pattern, d.name)) \
            if self.root.is_dir() else []

    def member(self, k: int) -> Path:
        return self.root / f"member_{k}"

    def members(self) -> list[Path]:
        """The finished member dirs, in the order of their seeds (read from each `final.pt`)."""
        done = [d for d in self._dirs(r"member_\d+") if (d / "final.pt").is_file()]
        return sorted(done, key=lambda d: model_info(d).get("seed", 0))

    @property
    def ensemble(self) -> Path:
        return self.root / "ensemble"

    def soft_targets(self, temperature: float, member: int | None = None) -> Path:
        return self.root / (f"soft_T{temperature:g}" + ("" if member is None else f"_member_{member}"))

    def soft_target_dirs(self, members: bool = False) -> list[Path]:
        """Finished soft-target dirs of the ensemble (or, with `members`, of single members),
        by temperature (from each `info.json`)."""
        found = [(info, d) for d in self._dirs(r"soft_T[\d.]+(_member_\d+)?")
                 if (info := read_json(d / "info.json")) is not None and (info.get("member") is not None) == members]
        return [d for _, d in sorted(found, key=lambda x: (x[0]["temperature"], x[0].get("member") or 0))]

    @staticmethod
    def soft_temperature(soft_dir: Path) -> float:
        return float(read_json(Path(soft_dir) / "info.json")["temperature"])

    def student(self, temperature: float) -> Path:
        return self.root / f"student_T{temperature:g}"

    def students(self) -> list[Path]:
        """The finished students of the temperature sweep, by the temperature they were
        distilled at (their `nnet.yaml`)."""
        done = [d for d in self._dirs(r"student_T[\d.]+") if (d / "final.pt").is_file()]
        return sorted(done, key=self.temperature)

    @staticmethod
    def temperature(model_dir: Path) -> float:
        """The temperature a student was distilled at."""
        return float(_config_value(Path(model_dir), "temperature"))

    @property
    def distilled(self) -> Path:
        return self.root / "distilled"

    def chosen_student(self) -> Path | None:
        """The student `distilled` links to, or None without the link."""
        return self.distilled.resolve() if self.distilled.is_symlink() else None

    @property
    def student_mixup(self) -> Path:
        return self.root / "student_mixup"

    @property
    def switched(self) -> Path:
        return self.root / "switched"

    def section6(self, kind: str) -> Path:
        """`hard`, `soft` or `mixup`: the subset model trained on those targets."""
        return self.root / f"subset_{kind}"

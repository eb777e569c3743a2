"""The alignment dir (Kaldi's exp/*_ali): senone per frame, counts, priors, report.

`ali.{ark,scp}` (int32 vectors), `pdf_counts`, `priors` (add-one smoothed), `phones.ctm`,
`align_failed.txt`, `align_report.json`, and the `tree`/`final.pt` it came from. Every
stage reads it through `AlignmentDir`, never by path strings.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import kaldiio
import numpy as np

from asrkd.data import sort_key
from asrkd.hmm.tree import ContextTree
from asrkd.utils import AsrkdError, atomic_file, new_ark, write_list


class AlignmentDir:
    """Read access to an alignment dir; `AlignmentDir.write` creates one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        for f in ("ali.scp", "pdf_counts", "align_report.json"):  # the report is written last
            if not (self.path / f).is_file():
                raise AsrkdError(f"{self.path / f}: missing, the alignment is incomplete (run `asrkd align`)")

    def __repr__(self) -> str:
        return f"AlignmentDir({str(self.path)!r})"

    @cached_property
    def ali(self) -> dict[str, np.ndarray]:
        """Senone per frame of every aligned utterance (loaded on access)."""
        try:
            return kaldiio.load_scp(str(self.path / "ali.scp"))
        except Exception as e:
            raise AsrkdError(f"{self.path / 'ali.scp'}: unreadable ({type(e).__name__}: {e})") from None

    def keys(self) -> list[str]:
        return sorted(self.ali, key=sort_key)

    @cached_property
    def counts(self) -> np.ndarray:
        """Frames per senone in the alignment."""
        path = self.path / "pdf_counts"
        try:
            c = np.array(path.read_text().split(), dtype=np.int64)
        except ValueError:
            raise AsrkdError(f"{path}: expected integers") from None
        if len(c) == 0 or (c < 0).any():
            raise AsrkdError(f"{path}: expected non-negative counts")
        return c

    @property
    def num_pdfs(self) -> int:
        return len(self.counts)

    @cached_property
    def log_priors(self) -> np.ndarray:
        """log p(s) from the `priors` file (add-one smoothed counts), float32."""
        path = self.path / "priors"
        try:
            p = np.array(path.read_text().split(), dtype=np.float64)
        except (OSError, ValueError):
            raise AsrkdError(f"{path}: missing or not numbers") from None
        if len(p) != self.num_pdfs or not np.all(p > 0):
            raise AsrkdError(f"{path}: expected {self.num_pdfs} positive priors, got {len(p)} values")
        return np.log(p).astype(np.float32)

    @cached_property
    def tree_pdf_info(self) -> list[tuple[int, int]] | None:
        """(phone, HMM state) of each senone from the `tree` it was aligned with, or None without."""
        if not (self.path / "tree").is_file():
            return None
        tree = ContextTree.read(self.path / "tree")
        if tree.num_pdfs != self.num_pdfs:
            raise AsrkdError(f"{self.path / 'tree'}: {tree.num_pdfs} senones, pdf_counts has {self.num_pdfs}")
        return tree.pdf_info

    @property
    def pdf_phones(self) -> np.ndarray | None:
        """The phone of each senone, or None without a `tree`."""
        info = self.tree_pdf_info
        return None if info is None else np.array([phone for phone, _ in info], dtype=np.int64)

    def targets(self, utt: str, num_frames: int) -> np.ndarray:
        """The senone alignment of `utt`, checked against its feature length."""
        a = self.ali[utt]
        if len(a) != num_frames:
            raise AsrkdError(f"{self.path / 'ali.scp'}: '{utt}' has {len(a)} frames of alignment but "
                             f"{num_frames} frames of features: the features changed, realign")
        if len(a) and (a.min() < 0 or a.max() >= self.num_pdfs):
            raise AsrkdError(f"{self.path / 'ali.scp'}: '{utt}' has senones outside 0..{self.num_pdfs - 1}")
        return a

    @staticmethod
    def write(path: str | Path, ali: dict[str, np.ndarray], num_pdfs: int, failed: list[str],
              ctm: list[str], extra: dict) -> dict:
        """Write ali.{ark,scp}, phones.ctm, pdf_counts, priors, align_failed.txt and
        align_report.json (last: marks the dir complete); returns the report."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "align_report.json").unlink(missing_ok=True)  # incomplete until rewritten last
        utts = sorted(ali, key=sort_key)
        with new_ark(path.resolve() / "ali") as ark:  # scp entries absolute, as Kaldi's  # the old ark stays readable until ali.scp switches
            with open(ark, "wb") as fa, atomic_file(path / "ali.scp") as fs:
                for utt in utts:
                    kaldiio.save_ark(fa, {utt: ali[utt].astype(np.int32)}, scp=fs)
        write_list(path / "phones.ctm", ctm)
        counts = np.bincount(np.concatenate([ali[u] for u in utts]), minlength=num_pdfs) if utts \
            else np.zeros(num_pdfs, dtype=np.int64)
        write_list(path / "pdf_counts", [" ".join(map(str, counts))])
        priors = (counts + 1.0) / (counts.sum() + num_pdfs)  # add-one: unseen senones keep a finite prior
        write_list(path / "priors", [" ".join(f"{p:.6e}" for p in priors)])
        write_list(path / "align_failed.txt", sorted(failed, key=sort_key))
        edges = [0, 1, 10, 100, 1000, 10000]
        binned, _ = np.histogram(counts, bins=edges + [np.inf])
        hist = {(f"{lo}-{hi - 1}" if hi else f"{lo}+"): int(n) for lo, hi, n in zip(edges, edges[1:] + [None], binned)}
        report = {"aligned": len(ali), "failed": len(failed), "frames": int(counts.sum()), "num_pdfs": num_pdfs,
                  "pdfs_seen": int((counts > 0).sum()), "senone_occupancy_histogram": hist, **extra}
        with atomic_file(path / "align_report.json") as f:
            json.dump(report, f, indent=2)
        return report

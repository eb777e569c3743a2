"""Reading audio named by a `wav.scp` entry: files or (when allowed) pipe commands."""

from __future__ import annotations

import io
import logging
import os
import subprocess

import numpy as np
import soundfile as sf

log = logging.getLogger(__name__)


class AudioError(Exception):
    """Unreadable, empty or otherwise unusable audio; the message is one line."""


def _load(spec: str, allow_pipes: bool) -> tuple[np.ndarray, int]:
    spec = spec.strip()
    if spec.endswith("|"):
        if not allow_pipes:
            raise AudioError(f"pipe command in wav.scp not allowed (pass --allow-pipes): '{spec}'")
        proc = subprocess.run(spec[:-1], shell=True, capture_output=True)
        if proc.returncode != 0:
            raise AudioError(f"command failed ({proc.returncode}): '{spec}'")
        source = io.BytesIO(proc.stdout)
    elif not os.path.isfile(spec):
        raise AudioError(f"no such file '{spec}'")
    else:
        source = spec
    try:
        samples, sr = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        reason = str(e).splitlines()[0].rsplit(": ", 1)[-1]  # libsndfile repeats the path
        raise AudioError(f"cannot read '{spec}': {reason}") from None
    return samples, sr


def read_audio(
    spec: str,
    sample_rate: int | None = None,
    channel: int | None = None,
    allow_pipes: bool = False,
) -> tuple[np.ndarray, int]:
    """Return mono float32 samples in [-1, 1] and their rate.

    Multi-channel audio is averaged unless `channel` picks one; with `sample_rate`
    set, other rates are resampled with soxr (librosa). Raises AudioError.
    """
    samples, sr = _load(spec, allow_pipes)
    if samples.shape[0] == 0:
        raise AudioError(f"empty audio '{spec}'")
    if channel is None:
        x = samples.mean(axis=1)
    elif not 0 <= channel < samples.shape[1]:
        raise AudioError(f"channel {channel} requested but '{spec}' has {samples.shape[1]}")
    else:
        x = samples[:, channel]
    if not np.all(np.isfinite(x)):
        raise AudioError(f"non-finite samples in '{spec}'")
    if sample_rate is not None and sr != sample_rate:
        x, sr = resample(x, sr, sample_rate), sample_rate
    return np.ascontiguousarray(x, dtype=np.float32), sr


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """High-quality soxr resampling (via librosa)."""
    import librosa

    return librosa.resample(x, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq").astype(np.float32)

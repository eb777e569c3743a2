"""Where and how torch runs: the device, CPU threads and the process's memory and float
settings. (Distributed set-up belongs here too.)"""

from __future__ import annotations

import ctypes
import logging
import os

import torch

from asrkd.environment import native_bf16
from asrkd.utils import AsrkdError

log = logging.getLogger(__name__)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise AsrkdError("--device cuda: no CUDA device is available to torch")
    return torch.device(device)


def cpu_setup(threads: int | None = None) -> int:
    """Set up this process for torch work on the CPU; returns the thread count.

    - Intra-op threads: `threads`, else OMP_NUM_THREADS, else all cores. Two jobs that each
      take all cores slow each other down several times (OpenMP spin-waits).
    - Denormals flushed to zero: without, the 1024 x 4 DNN's training step takes 1.4x as
      long from about step 700 on (denormal float arithmetic is slow on x86).
    - glibc malloc keeps blocks up to 32 MB on its heap and does not return freed memory. By
      default each minibatch's activations are mapped and unmapped again, about 3,000 page
      faults per step on the recipe's data, a fifth of the step's time."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    n = threads or (int(env) if env.isdigit() else 0) or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    torch.set_flush_denormal(True)
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return n
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD, its maximum on 64-bit
    mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD
    return n


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision to compute in: `auto` is bf16 where the hardware has it (a CUDA device
    with bf16, a CPU with AVX512-BF16 or AMX) and fp32 elsewhere; an explicit bf16 on a CPU
    without it is kept, with a warning (torch then emulates it, tens of times slower)."""
    has_bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else native_bf16()
    if precision == "auto":
        return "bf16" if has_bf16 else "fp32"
    if precision == "bf16" and not has_bf16:
        log.warning("precision bf16 on a %s without native bf16: emulated, tens of times slower than fp32 "
                    "(precision: auto picks fp32 here)", device.type.upper())
    return precision

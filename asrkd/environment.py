"""What produced a result: the asrkd commit, package versions, CPU, the vector instructions
the numeric kernels use, threads and device. Stored in model files, decode_info.json and
results.json; `asrkd env` prints it."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

PACKAGES = ("torch", "numpy", "numba", "scipy", "kaldi-native-fbank", "kaldifst", "kaldi-decoder", "kaldilm",
            "kaldialign", "kaldingram", "kaldiio")
# variables that change the threads or the instruction set of torch's, MKL's, OpenBLAS's or numpy's kernels
KERNEL_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
               "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")


def git_state(path: str | Path) -> dict:
    """{"commit", "dirty"} of the git work tree whose top is `path` (dirty: a file differs from
    the commit or is new and not ignored); both None when `path` is not a work tree's top or git fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # not a hook's repository
    try:
        def git(*args):  # no optional locks: never holds index.lock against a commit running beside
            return subprocess.run(["git", "--no-optional-locks", "-C", str(path), *args], capture_output=True,
                                  text=True, env=env, timeout=10, check=True).stdout.strip()
        top, commit = git("rev-parse", "--show-toplevel", "HEAD").splitlines()
        if Path(top).resolve() != Path(path).resolve():
            raise ValueError(top)
        return {"commit": commit, "dirty": bool(git("status", "--porcelain"))}
    except (OSError, ValueError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions(names=PACKAGES) -> dict:
    """{distribution name: version, None where not installed}."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


@functools.cache
def _cpuinfo_fields() -> dict:
    """The first CPU's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = dict(ln.split(":", 1) for ln in text.splitlines()[:64] if ":" in ln)
    return {k.strip(): v.strip() for k, v in fields.items()}


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (avx2, avx512_bf16, amx_tile...), None where the OS does not say."""
    flags = _cpuinfo_fields().get("flags")
    return None if flags is None else set(flags.split())


def native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (AVX512-BF16 or AMX); without, torch emulates
    bf16 matrix products tens of times slower than float32."""
    return bool({"avx512_bf16", "amx_bf16"} & (cpu_flags() or set()))


def _cpuinfo() -> tuple[str | None, bool | None]:
    """(model name, has AMX) from /proc/cpuinfo; None where it does not say."""
    flags = cpu_flags()
    return _cpuinfo_fields().get("model name"), None if flags is None else bool({"amx_tile", "amx_bf16"} & flags)


def numpy_blas() -> dict | None:
    """numpy's BLAS library, version and the CPU architecture its kernels were chosen for
    (threadpoolctl); None without threadpoolctl or a BLAS it knows."""
    try:
        import numpy  # noqa: F401 (loads the BLAS)
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    mine = [i for i in blas if "numpy" in i.get("filepath", "")] or blas
    if not mine:
        return None
    return {"library": mine[0].get("internal_api"), "version": mine[0].get("version"),
            "architecture": mine[0].get("architecture")}


@functools.lru_cache(maxsize=None)
def _static() -> dict:
    """The part that does not change while the process runs (computed once)."""
    import torch

    cpu, amx = _cpuinfo()
    return {**{f"asrkd_{k}": v for k, v in git_state(Path(__file__).resolve().parent.parent).items()},
            "python": platform.python_version(), "platform": platform.platform(), "packages": package_versions(),
            "cpu": cpu or platform.processor() or platform.machine() or None,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "amx": amx, "native_bf16": native_bf16(),
            "numpy_blas": numpy_blas()}


def device_name(device=None) -> str:
    """"cpu", or the CUDA device's name for a CUDA `device` (str or torch.device)."""
    import torch

    device = torch.device(device if device is not None else "cpu")
    if device.type != "cuda":
        return device.type
    try:
        return torch.cuda.get_device_name(device)
    except (RuntimeError, AssertionError, AttributeError):
        return str(device)


def environment(device=None) -> dict:
    """The environment of this process: commit, Python, packages, CPU and ISA (cached), plus
    torch's intra-op threads, the kernel variables set, and `device` (default: cpu)."""
    import torch

    return {**_static(), "threads": torch.get_num_threads(), "device": device_name(device),
            "kernel_env": {k: os.environ[k] for k in KERNEL_VARS if k in os.environ}}


"""Where and how torch runs: the device, CPU threads, the process's memory and float
settings, and the torchrun job it may belong to (torch.distributed: joining it, and the few
collectives training uses)."""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import logging
import os
from dataclasses import dataclass

import torch
# before any process group exists: torch.distributed.nn binds group.WORLD as a default argument
# when imported (the optimizer imports it, through torch._dynamo). Imported after the group is
# created, it keeps the group alive past destroy_process_group(), and gloo's threads then release
# tensors while Python shuts down ("terminate called without an active exception", SIGABRT)
import torch.distributed.nn  # noqa: F401

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


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (one process: world size 1, rank 0)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def distributed_env() -> Dist:
    """The job torchrun (or srun with its variables) started this process in: WORLD_SIZE, RANK,
    LOCAL_RANK, LOCAL_WORLD_SIZE. Without WORLD_SIZE, or with 1, a single process."""
    names = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    raw = {n: os.environ.get(n, "") for n in names}
    if raw["WORLD_SIZE"] in ("", "1"):
        return SINGLE
    try:
        world, rank = int(raw["WORLD_SIZE"]), int(raw["RANK"])
        local = int(raw["LOCAL_RANK"] or 0)
        local_world = int(raw["LOCAL_WORLD_SIZE"] or world)
    except ValueError:
        raise AsrkdError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (" + ", ".join(
            f"{n}={v!r}" for n, v in raw.items()) + "): launch with torchrun") from None
    if not (world > 1 and 0 <= rank < world and 0 <= local < local_world):
        raise AsrkdError(f"inconsistent torchrun variables (WORLD_SIZE={world}, RANK={rank}, LOCAL_RANK={local}, "
                         f"LOCAL_WORLD_SIZE={local_world})")
    return Dist(world, rank, local, local_world)


def derived_seed(seed: int, epoch: int, rank: int) -> int:
    """A 63-bit seed of its own for each (seed, epoch, rank): a rank's draws in an epoch."""
    return int.from_bytes(hashlib.sha256(f"asrkd {seed} {epoch} {rank}".encode()).digest()[:8], "little") >> 1


_comm_device = torch.device("cpu")  # where collectives' tensors live (the rank's GPU with NCCL)


def distributed_setup(device: str = "auto") -> tuple[Dist, torch.device]:
    """Join the torchrun job this process belongs to (once; later calls return the same): gloo
    on the CPU, NCCL on CUDA with each rank on its LOCAL_RANK's GPU. Ranks other than 0 log
    errors only. A single process gets `pick_device(device)` and no process group."""
    global _comm_device
    d = distributed_env()
    dev = pick_device(device)
    if not d.active:
        return d, dev
    if dev.type == "cuda":
        if torch.cuda.device_count() < d.local_world_size:
            raise AsrkdError(f"torchrun started {d.local_world_size} ranks on this machine but torch sees "
                             f"{torch.cuda.device_count()} CUDA device(s): one GPU per rank (--nproc-per-node "
                             f"{torch.cuda.device_count()}), or --device cpu")
        dev = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(dev)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                             device_id=dev if dev.type == "cuda" else None)
        atexit.register(_destroy)  # no barrier: after an error, or a library caller's exit
        if not d.main:
            logging.getLogger("asrkd").setLevel(logging.ERROR)  # not every line N times
        log.info("rank %d of %d (local rank %d), %s on %s", d.rank, d.world_size, d.local_rank,
                 torch.distributed.get_backend(), dev)
    _comm_device = dev if dev.type == "cuda" else torch.device("cpu")
    return d, dev


def leave_group() -> None:
    """Leave the torchrun job's process group once every rank is here (nothing outside one):
    a finished command tears its gloo/NCCL state down at a point every rank has reached,
    not in an exit hook while another rank may still be talking to it."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        _destroy()


def _destroy() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(d: Dist) -> None:
    """Wait until every rank is here (nothing for a single process)."""
    if d.active:
        torch.distributed.barrier()


def all_sum(values, d: Dist) -> list[float]:
    """Sums over the ranks of a few numbers (float64), bitwise the same on every rank (rank
    0's result is broadcast), so decisions taken from them agree."""
    t = torch.tensor(values, dtype=torch.float64)
    if d.active:
        t = t.to(_comm_device)
        torch.distributed.all_reduce(t)
        torch.distributed.broadcast(t, 0)
    return t.cpu().tolist()


def on_main(fn, d: Dist):
    """`fn()` run on rank 0 only, its result (or its AsrkdError, raised again) on every rank."""
    if not d.active:
        return fn()
    box = [None, None]
    if d.main:
        try:
            box[0] = fn()
        except AsrkdError as e:
            box[1] = str(e)
    torch.distributed.broadcast_object_list(box, 0, device=_comm_device)
    if box[1] is not None:
        raise AsrkdError(box[1])
    return box[0]


def broadcast_params(model: torch.nn.Module, d: Dist) -> None:
    """Every rank starts from rank 0's weights."""
    if d.active:
        for t in model.state_dict().values():
            torch.distributed.broadcast(t, 0)


def sync_gradients(params: list[torch.Tensor], extra: list[float], d: Dist) -> list[float]:
    """All-reduce (sum) the gradients of `params` and a few numbers `extra` in one flat buffer;
    a missing gradient counts as zeros and is set. Returns the summed `extra`."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [torch.tensor(extra, device=grads[0].device)])
    torch.distributed.all_reduce(flat)
    for p, chunk in zip(params, flat[:-len(extra)].split([g.numel() for g in grads])):
        p.grad = chunk.view_as(p).to(p.dtype)
    return flat[-len(extra):].tolist()


def weights_agree(model: torch.nn.Module, d: Dist) -> bool:
    """Whether every rank holds the same weights (a float64 checksum of each, compared)."""
    if not d.active:
        return True
    s = torch.stack([t.double().sum() for t in model.state_dict().values()]).sum().reshape(1).to(_comm_device)
    every = [torch.zeros_like(s) for _ in range(d.world_size)]
    torch.distributed.all_gather(every, s)
    return all(torch.equal(e, s) for e in every)

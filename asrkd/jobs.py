"""A command's independent jobs (one per split of a data dir, per ensemble member, per shard
of utterances) run as local processes or as a Slurm job array through submitit: Kaldi's
run.pl and slurm.pl.

`--cmd local` runs them in forked processes on this machine (at most the command's `--nj` at
once; one job runs in the command's own process). `--cmd slurm` submits one job array, sized
by the job config (`conf/cmd.yaml`): partition, CPUs, GPUs, memory, time limit and any sbatch
option, with a section per job kind (`train` for the models trained, `default` for the
rest) overriding the top-level options. Each finished job leaves its result in
`<work>/jobs/`, so a rerun after a kill runs only the jobs that did not finish; a failed job
is a one-line error naming its log. The results are the same either way: a job computes the
same thing wherever it runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import multiprocessing
import os
import pickle
import re
import signal
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import yaml

from asrkd.utils import AsrkdError, die_with_parent

log = logging.getLogger(__name__)

CMDS = ("local", "slurm")
KINDS = ("default", "train")  # job kinds a job config sizes apart


@dataclass(frozen=True)
class JobConfig:
    """Where a command's jobs run and, on Slurm, what each asks for."""

    cmd: str = "local"  # local | slurm
    partition: str | None = None  # Slurm partition (None: the cluster's default)
    cpus_per_task: int = 1
    gpus_per_task: int = 0
    mem_gb: float = 4.0
    timeout_min: int = 240
    array_parallelism: int = 64  # jobs of one array running at once
    sbatch: dict = field(default_factory=dict)  # more sbatch options by name, e.g. {account: asr, qos: normal}
    setup: list = field(default_factory=list)  # shell lines run before each job, e.g. ["module load cuda"]


def job_config(path: str | Path | None = None, cmd: str | None = None, kind: str = "default") -> JobConfig:
    """The job config of `kind`: the file's top-level options, its `kind` section over them,
    `cmd` (the command line's --cmd) over both. No file: local jobs."""
    raw = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise AsrkdError(f"{path}: unreadable job config ({type(e).__name__})") from None
        if not isinstance(raw, dict):
            raise AsrkdError(f"{path}: a job config is a mapping of options")
    names = {f.name for f in dataclasses.fields(JobConfig)}
    for section in ("", *KINDS):
        keys = set(raw.get(section, {}) if section else raw) - (names | set(KINDS) if not section else names)
        if keys:
            raise AsrkdError(f"{path}: unknown job option(s) {', '.join(sorted(keys))}"
                             f"{f' in section {section}' if section else ''} (known: {', '.join(sorted(names))})")
    options = {k: v for k, v in raw.items() if k in names}
    options |= raw.get(kind) or {}
    if cmd is not None:
        options["cmd"] = cmd
    cfg = JobConfig(**options)
    if cfg.cmd not in CMDS:
        raise AsrkdError(f"cmd must be one of {', '.join(CMDS)}, got {cfg.cmd!r}")
    if min(cfg.cpus_per_task, cfg.timeout_min, cfg.array_parallelism) < 1 or cfg.gpus_per_task < 0 or cfg.mem_gb <= 0:
        raise AsrkdError(f"{path}: cpus_per_task, timeout_min and array_parallelism must be at least 1, "
                         "gpus_per_task at least 0, mem_gb positive")
    return cfg


def add_job_options(parser, nj: str | None = None) -> None:
    """--cmd and --cmd-config of a command that runs jobs; with `nj`, first --nj with that help."""
    if nj is not None:
        parser.add_argument("--nj", type=int, default=1, help=nj)
    parser.add_argument("--cmd", choices=CMDS, help="where the jobs run: local processes, or a Slurm job array "
                        "(default: the job config's cmd, else local)")
    parser.add_argument("--cmd-config", help="job config YAML (conf/cmd.yaml): cmd, partition, cpus_per_task, "
                        "gpus_per_task, mem_gb, timeout_min, sbatch options; a `train` section for training jobs")


def _job(fn: Callable, args: tuple, result: Path):
    """Run one job and keep its result (written last, so only a finished job leaves one)."""
    if cpus := os.environ.get("SLURM_CPUS_PER_TASK"):  # a Slurm job's threads: the CPUs it was given
        os.environ["OMP_NUM_THREADS"] = cpus
    value = fn(*args)
    tmp = result.with_name(result.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, result)
    return value


_PENDING: list = []  # what forked local jobs run: set before the fork, so no argument is pickled


def _local_job(i: int):
    """A forked job. Torch runs on one thread here: after the parent's OpenMP threads, more hang."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    return _job(*_PENDING[i])


def _run_local(pending: list, parallel: int) -> list:
    global _PENDING
    if parallel <= 1 or len(pending) == 1:
        return [_job(*p) for p in pending]
    _PENDING = pending
    try:
        with multiprocessing.get_context("fork").Pool(min(parallel, len(pending)), initializer=die_with_parent) as pool:
            return pool.map(_local_job, range(len(pending)), chunksize=1)
    finally:
        _PENDING = []


def _run_slurm(pending: list, name: str, work: Path, cfg: JobConfig) -> list:
    import submitit

    ex = submitit.AutoExecutor(folder=work / "slurm", cluster="slurm")
    ex.update_parameters(name=f"asrkd-{name}", nodes=1, tasks_per_node=1, cpus_per_task=cfg.cpus_per_task,
                         gpus_per_node=cfg.gpus_per_task, mem_gb=cfg.mem_gb, timeout_min=cfg.timeout_min,
                         slurm_array_parallelism=cfg.array_parallelism, slurm_setup=list(cfg.setup),
                         slurm_additional_parameters=dict(cfg.sbatch),
                         **({"slurm_partition": cfg.partition} if cfg.partition else {}))
    jobs = ex.map_array(_job, *zip(*pending))
    log.info("%s: %d Slurm jobs submitted (array %s), logs in %s", name, len(jobs), jobs[0].job_id.split("_")[0],
             work / "slurm")
    results, failed = [], None
    try:
        for job in jobs:
            try:
                results.append(job.result())
            except Exception:  # submitit's FailedJobError or UncompletedJobError
                failed = failed or job
                results.append(None)
    finally:
        for j in jobs:
            if not j.done():
                j.cancel(check=False)
    if failed:
        raise AsrkdError(f"{name}: Slurm job {failed.job_id} failed: {_why(failed.paths.stderr)}; "
                         f"log: {failed.paths.stderr}")
    return results


def _why(stderr: Path) -> str:
    """The last error line of a failed job's log (the exception, or Slurm's reason)."""
    try:
        lines = stderr.read_text(errors="replace").splitlines()
    except OSError:
        return "no log (the job never started?)"
    python = [ln for ln in lines if "Error: " in ln]  # the exception, before srun's "error: ... exit code"
    slurm = [ln for ln in lines if "error:" in ln or "CANCELLED" in ln]
    return (python or slurm or lines or ["empty log"])[-1].strip().removeprefix("asrkd.utils.")


def split_key(key: str, parts) -> str:
    """The jobs' key of an output (`Output.key`) made specific to how its data were split, so
    a rerun with another --nj reuses no job of the old split."""
    return hashlib.sha1(repr((key, parts)).encode()).hexdigest()[:12]


def run_jobs(fn: Callable, args: list[tuple], name: str, work: str | Path, cfg: JobConfig | None = None,
             parallel: int = 1, key: str = "") -> list:
    """[fn(*a) for a in args], each call one job; results in order. `work` holds the finished
    jobs' results (`jobs/<name>.<key>.<i>.pkl`, removed once all are collected) and Slurm's
    logs; `key` names what the jobs compute (the output's options and inputs), so a result
    left by a run with other options is never reused. Locally at most `parallel` at once."""
    cfg = cfg or JobConfig()
    work = Path(work)
    (work / "jobs").mkdir(parents=True, exist_ok=True)
    paths = [work / "jobs" / f"{name}.{key}.{i + 1}.pkl" for i in range(len(args))]
    results = [None] * len(args)
    pending, todo = [], []
    for i, (a, p) in enumerate(zip(args, paths)):
        try:
            results[i] = pickle.loads(p.read_bytes())
        except (OSError, EOFError, pickle.UnpicklingError):
            pending.append((fn, a, p))
            todo.append(i)
    if len(todo) < len(args):
        log.info("%s: %d of %d jobs finished in an earlier run, reusing them", name, len(args) - len(todo), len(args))
    if pending:
        new = _run_slurm(pending, name, work, cfg) if cfg.cmd == "slurm" else _run_local(pending, parallel)
        for i, r in zip(todo, new):
            results[i] = r
    for p in paths:
        p.unlink(missing_ok=True)
    return results


SHELL_SYNTAX = set("|&;<>()$`\\\"'*?[]{}~#\n")  # a command with any of these goes to bash
_FRESH_THREADS: list[int] = []  # torch's threads in a new process (`note_new_process_threads`)


def asrkd_argv(command: str) -> list[str] | None:
    """The arguments of a command that is one plain `asrkd ...` call (no shell syntax; words
    split at spaces and tabs, as bash does), else None."""
    words = re.split(r"[ \t]+", command.strip())
    if len(words) < 2 or words[0] != "asrkd" or SHELL_SYNTAX & set(command):
        return None
    return words[1:]


def note_new_process_threads() -> None:
    """Note torch's thread count as a new process has it, for the asrkd jobs `shell_job` forks
    (call it before any job, after importing what they should share)."""
    import torch

    _FRESH_THREADS[:] = [torch.get_num_threads()]


def _fork_asrkd(main: Callable, argv: list[str]) -> tuple[int, int]:
    """Run asrkd's `main(argv)` in a forked child of this process (sharing what it imported)
    with stdout and stderr on a pipe: returns (pid, the pipe's read end)."""
    sys.stdout.flush()
    sys.stderr.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write)
        return pid, read
    code = 1
    try:
        os.close(read)
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        die_with_parent()
        for sig in (signal.SIGTERM, signal.SIGCONT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, signal.SIG_DFL)  # a new process's, not this one's
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if "torch" in sys.modules and _FRESH_THREADS:
            sys.modules["torch"].set_num_threads(_FRESH_THREADS[0])  # not a pool worker's one thread
        logging.getLogger().handlers.clear()  # main() sets up logging (its level, -v) as in a new process
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def shell_job(log_file: str, command: str, main: Callable | None = None) -> int:
    """One job of `asrkd run-jobs`: `command` (a plain `asrkd ...` call as asrkd's `main` in a
    forked child of this process, where given; anything else by `bash -c`), its output written
    added to `log_file` after a `# <time> command` line, as recipes' run_log writes (a rerun
    that finds the output finished keeps the log of the run that made it), and, run in a
    terminal's process, shown."""
    import subprocess

    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    show = not os.environ.get("SLURM_JOB_ID") and multiprocessing.parent_process() is None
    # a pool worker's (daemonic) fork could not start pools of its own: bash then
    argv = asrkd_argv(command) if main and not multiprocessing.current_process().daemon else None
    with open(log_file, "a") as f:
        f.write(f"# {datetime.now().astimezone().isoformat(timespec='seconds')} {command}\n")
        f.flush()
        if argv is not None:
            pid, fd = _fork_asrkd(main, argv)
            output = os.fdopen(fd, errors="replace")
        else:
            proc = subprocess.Popen(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace")
            output = proc.stdout
        try:
            with output:
                for line in output:
                    f.write(line)
                    if show:
                        sys.stdout.write(line)
        except BaseException:  # a full disk, Ctrl-C: the job does not outlive its reader
            if argv is not None:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            else:
                proc.kill()
                proc.wait()
            raise
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) if argv is not None else proc.wait()
    if status:
        raise AsrkdError(f"job failed (exit status {status}): {command}; log: {log_file}")
    return 0

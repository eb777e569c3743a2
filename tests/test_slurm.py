"""submitit on a real one-node Slurm cluster (tools/slurm.sh + the tools/slurm/sacct shim)."""

import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import cloudpickle
import pytest
import submitit

from slurm_cluster import slurm_cluster, slurm_sh  # noqa: F401

# Jobs unpickle these functions in a fresh interpreter where tests/ is not importable.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging) when the block takes longer than `seconds`."""
    def expire(signum, frame):
        raise TimeoutError(f"no answer from the slurm job within {seconds} s")
    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def executor(folder: Path) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(slurm_partition="debug", timeout_min=5, cpus_per_task=1, mem_gb=1)
    return ex


def where(x: int) -> tuple:
    """x squared, with the slurm job id and the array task id (None outside arrays)."""
    return x * x, os.environ["SLURM_JOB_ID"], os.environ.get("SLURM_ARRAY_TASK_ID")


def crash(how: str) -> None:
    """Die without writing a result: SIGKILL ("kill") or exit status 1."""
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(1)


def test_one_job(slurm_cluster, tmp_path):
    assert Path(slurm_cluster["SLURM_CONF"]).is_file()
    job = executor(tmp_path).submit(where, 7)
    with deadline(60):
        value, job_id, task = job.result()
    assert (value, job_id, task) == (49, job.job_id, None)
    with deadline(30):  # the result file comes before slurm marks the job finished
        while job.get_info(mode="force").get("State") != "COMPLETED":
            time.sleep(0.5)


def test_array_in_order(slurm_cluster, tmp_path):
    jobs = executor(tmp_path).map_array(where, [1, 2, 3])
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1, "one job array"
    with deadline(90):
        results = [j.result() for j in jobs]
    assert [r[0] for r in results] == [1, 4, 9]
    assert [r[2] for r in results] == ["0", "1", "2"]


def test_crashed_jobs_raise(slurm_cluster, tmp_path):
    """Jobs that die without a result (SIGKILL, exit 1) must raise, not wait forever.

    Without accounting this needs the sacct shim: a plain `sacct` fails and submitit keeps waiting.
    """
    jobs = [executor(tmp_path / how).submit(crash, how) for how in ("kill", "exit")]
    for job in jobs:  # once FAILED, submitit waits this long for a late result file (default 15 s)
        job._results_timeout_s = 2
    start = time.monotonic()
    for job in jobs:
        with deadline(60), pytest.raises(submitit.core.utils.UncompletedJobError, match="FAILED"):
            job.result()
    assert time.monotonic() - start < 40


def test_down_stops_only_its_daemons(slurm_cluster, tmp_path):
    """A second cluster in tmp_path: up is idempotent, down stops its daemons and not the session's."""
    d = tmp_path / "c2"
    up = slurm_sh("up", d)
    assert up.returncode == 0, up.stderr
    pids = [int((d / f).read_text()) for f in ("slurmctld.pid", "slurmd.pid")]
    assert all(Path(f"/proc/{p}").exists() for p in pids)
    assert "already up" in slurm_sh("up", d).stdout
    assert slurm_sh("status", d).returncode == 0
    down = slurm_sh("down", d)
    assert down.returncode == 0, down.stderr
    assert not any(Path(f"/proc/{p}").exists() for p in pids), "daemons still running after down"
    assert not d.exists(), f"down left {sorted(os.listdir(d))}"
    assert slurm_sh("status", d).returncode == 1
    session = Path(slurm_cluster["SLURM_CONF"]).parent
    assert slurm_sh("status", session).returncode == 0, "down of one cluster stopped another"

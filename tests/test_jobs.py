"""The job layer (asrkd.jobs): results in order, a failed job as a one-line error naming its
log, a rerun that runs only the jobs without a result, the job config; locally and on the
one-node Slurm (tools/slurm.sh)."""

import os
import re
import subprocess
import sys

import pytest

from asrkd.jobs import asrkd_argv, job_config, run_jobs
from asrkd.utils import AsrkdError
from conftest import ROOT
from slurm_cluster import slurm_cluster  # noqa: F401


def square(x: int, calls) -> int:
    """A job that counts its runs in the file `calls` (one line each)."""
    with open(calls, "a") as f:
        f.write(f"{x}\n")
    if x < 0:
        raise AsrkdError(f"no square of {x}")
    return x * x


def test_local_jobs_keep_order_and_rerun_only_what_failed(tmp_path):
    calls = tmp_path / "calls"
    assert run_jobs(square, [(x, calls) for x in range(5)], "sq", tmp_path, parallel=2, key="a") == [0, 1, 4, 9, 16]
    assert sorted(calls.read_text().split()) == ["0", "1", "2", "3", "4"]
    assert list((tmp_path / "jobs").iterdir()) == []  # results are dropped once collected
    calls.unlink()
    with pytest.raises(AsrkdError, match="no square of -1"):
        run_jobs(square, [(1, calls), (-1, calls), (3, calls)], "sq", tmp_path, parallel=2, key="b")
    calls.unlink()
    with pytest.raises(AsrkdError):  # the finished jobs are not run again
        run_jobs(square, [(1, calls), (-1, calls), (3, calls)], "sq", tmp_path, parallel=2, key="b")
    assert calls.read_text().split() == ["-1"]
    calls.unlink()
    assert run_jobs(square, [(1, calls), (2, calls), (3, calls)], "sq", tmp_path, key="c") == [1, 4, 9]
    assert calls.read_text().split() == ["1", "2", "3"]  # another key: nothing reused


def test_run_jobs_forks_asrkd_calls_and_gives_the_rest_to_bash(tmp_path):
    """A plain `asrkd ...` job runs in a forked child (its own --threads and log level, its exit
    status), anything with shell syntax in bash; each log holds the command and its output.
    (Jobs run in a pool, `--nj` > 1, go to bash: a pool worker's fork could not start pools.)"""
    assert asrkd_argv("asrkd --threads 1 env") == ["--threads", "1", "env"]
    assert asrkd_argv("asrkd env > x") is None and asrkd_argv("echo asrkd") is None
    env = dict(os.environ, OMP_NUM_THREADS="2")
    jobs = [("a.log", "asrkd --threads 1 env"), ("b.log", "asrkd env"), ("c.log", "echo $((6 * 7)) | cat"),
            ("d.log", "asrkd -v validate-data-dir /nonexistent")]
    proc = subprocess.run([sys.executable, "-m", "asrkd.cli", "run-jobs", "--nj", "1",
                           *(x for log, cmd in jobs for x in ("--job", str(tmp_path / log), cmd)), str(tmp_path / "w")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "job failed (exit status 1): asrkd -v validate-data-dir" in proc.stderr
    logs = {log: (tmp_path / log).read_text() for log, _ in jobs}
    assert all(re.match(rf"# 20\S+ {re.escape(cmd)}\n", logs[log]) for log, cmd in jobs)
    assert '"threads": 1' in logs["a.log"] and '"threads": 2' in logs["b.log"]  # as a new process would have
    assert logs["c.log"].endswith("42\n") and "wav.scp: missing required file" in logs["d.log"]


def test_job_config(tmp_path):
    conf = tmp_path / "cmd.yaml"
    conf.write_text("cmd: slurm\nmem_gb: 2\ntrain:\n  mem_gb: 16\n  gpus_per_task: 1\n")
    assert job_config(conf).mem_gb == 2 and job_config(conf, kind="train").gpus_per_task == 1
    assert job_config(conf, "local").cmd == "local" and job_config(None).cmd == "local"
    for text, msg in (("cpus: 2\n", "unknown job option"), ("train:\n  queue: x\n", "in section train"),
                      ("cmd: pbs\n", "cmd must be one of"), ("mem_gb: 0\n", "mem_gb positive")):
        conf.write_text(text)
        with pytest.raises(AsrkdError, match=msg):
            job_config(conf)


def run_jobs_cli(tmp_path, *jobs):
    args = [a for log, cmd in jobs for a in ("--job", str(tmp_path / log), cmd)]
    return subprocess.run([sys.executable, "-m", "asrkd.cli", "run-jobs", "--cmd", "slurm", *args,
                           str(tmp_path / "work")], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_slurm_failure_names_the_log_and_rerun_submits_the_rest(slurm_cluster, tmp_path):
    flag = tmp_path / "fixed"
    jobs = [("a.log", f"echo ran a >> {tmp_path / 'runs'}"),
            ("b.log", f"test -f {flag} || {{ echo broken >&2; exit 4; }}")]
    proc = run_jobs_cli(tmp_path, *jobs)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()[-1]
    assert "Slurm job" in err and "exit status 4" in err and str(tmp_path / "b.log") in err and "_log.err" in err
    assert "broken" in (tmp_path / "b.log").read_text()
    flag.touch()
    proc = run_jobs_cli(tmp_path, *jobs)
    assert proc.returncode == 0, proc.stderr
    assert "1 of 2 jobs finished in an earlier run" in proc.stderr and "1 Slurm jobs submitted" in proc.stderr
    assert (tmp_path / "runs").read_text() == "ran a\n"

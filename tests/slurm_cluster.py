"""Session fixture: a real one-node Slurm cluster started by tools/slurm.sh.

Use it by importing the fixture into a test module (tests/ is on sys.path, like conftest):

    from slurm_cluster import slurm_cluster  # noqa: F401

    def test_x(slurm_cluster):  # {"SLURM_CONF": ..., "PATH": ...}, also set in os.environ
        ...

Skips (with tools/slurm.sh's one-line message) where slurm cannot be installed (exit status 3).
"""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "slurm.sh"


def slurm_sh(command: str, cluster_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `bash tools/slurm.sh COMMAND CLUSTER_DIR` and return the finished process."""
    return subprocess.run(["bash", str(SCRIPT), command, str(cluster_dir)],
                          capture_output=True, text=True, timeout=timeout)


def cluster_env(cluster_dir: Path) -> dict:
    """SLURM_CONF and PATH as CLUSTER_DIR/env.sh sets them."""
    out = subprocess.run(["bash", "-c", '. "$1"; printf "%s\\0%s" "$SLURM_CONF" "$PATH"', "-",
                          str(cluster_dir / "env.sh")], capture_output=True, text=True, check=True).stdout
    conf, path = out.split("\0")
    return {"SLURM_CONF": conf, "PATH": path}


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """Start a cluster for the session; yield the env vars to add (also set in os.environ)."""
    cluster_dir = tmp_path_factory.mktemp("slurm")
    up = slurm_sh("up", cluster_dir, timeout=900)  # may apt-get install slurm first
    if up.returncode == 3:
        pytest.skip((up.stderr.strip().splitlines() or ["slurm unavailable"])[-1])
    if up.returncode != 0:
        pytest.fail(f"tools/slurm.sh up failed ({up.returncode}):\n{up.stdout}{up.stderr}")
    env = cluster_env(cluster_dir)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        slurm_sh("down", cluster_dir)

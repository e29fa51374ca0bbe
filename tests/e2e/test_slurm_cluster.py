"""The SLURM array script on a real single-node cluster (Debian's slurm-wlm + munge, started by hand).

Skipped, with the reason, where SLURM is not installed or we are not root; `.ci/run` installs it
(util_scripts/setup_slurm.sh) so CI runs it.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from litgpt_runs import LITGPT, pretrain_config, write_shards

from sharded_mix.tools.checkpoints import newest_loadable_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SUBMIT = str(ROOT / "training_scripts" / "submit.sh")
NEEDED = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def slurm_conf(root: Path) -> Path:
    host = socket.gethostname().split(".")[0]
    (root / "state").mkdir()
    (root / "spool").mkdir()
    conf = root / "slurm.conf"
    conf.write_text(f"""ClusterName=shardedmixtest
SlurmctldHost={host}
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
NodeName={host} CPUs={os.cpu_count()} RealMemory=2000 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def ensure_munge() -> None:
    if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
        return
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "munged"], check=True)
    time.sleep(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = [binary for binary in NEEDED if shutil.which(binary) is None]
    if missing:
        pytest.skip(
            f"SLURM is not installed ({', '.join(missing)} missing); "
            "util_scripts/setup_slurm.sh installs slurm-wlm and munge"
        )
    if os.geteuid() != 0:
        pytest.skip("the local test cluster runs slurmd as root; run the tests as root to include it")
    root = tmp_path_factory.mktemp("cluster")
    conf = slurm_conf(root)
    env = {
        **os.environ,
        "SLURM_CONF": str(conf),
        "LITGPT": LITGPT,
        "SHARDED_MIX_LOG_DIR": "logs",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    ensure_munge()
    subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env)
    subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)
    deadline = time.time() + 60
    while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env).stdout:
        assert time.time() < deadline, (root / "slurmctld.log").read_text()[-2000:]
        time.sleep(0.5)
    work = root / "work"
    write_shards(work / "data")
    yield env, work
    subprocess.run(["scancel", "--user", "root"], env=env)
    for name in ("slurmd", "slurmctld"):
        pid_file = root / f"{name}.pid"
        if pid_file.exists():
            subprocess.run(["kill", pid_file.read_text().strip()])


def write_config(work: Path, name: str, steps: int, save_interval: int, literal: str) -> str:
    run = work / name
    run.mkdir()
    path = pretrain_config(
        run,
        {"data_path": "data", "literal_weights_str": literal},
        max_tokens=steps * 4 * 64,
        save_interval=save_interval,
    )
    config = yaml.safe_load(path.read_text())
    config["out_dir"] = f"out/{name}"  # relative to the submit directory, as a user writes it
    config["eval"]["interval"] = 1000
    path.write_text(yaml.safe_dump(config))
    return str(path.relative_to(work))


def submit(env, work, config_list, *options, wait=True):
    result = subprocess.run(
        ["bash", SUBMIT, config_list, *options, *(["--wait"] if wait else [])],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result


def log(work: Path, config_list: str, task: int) -> str:
    """The task's log, named after the list by submit.sh and appended to on every launch."""
    return (work / "logs" / f"{Path(config_list).stem}_{task}.log").read_text()


def test_array_of_two_configs_trains_both(cluster):
    env, work = cluster
    (work / "two.txt").write_text(
        "# two tiny runs\n"
        + write_config(work, "a", 6, 3, "main/1:0.7,c1:0.3")
        + "\n\n"
        + write_config(work, "b", 6, 3, "main/2:0.5,m1:0.5")
        + "\n"
    )
    result = submit(env, work, "two.txt")
    assert result.returncode == 0, result.stdout + result.stderr + log(work, "two.txt", 1)[-3000:]
    for task, name in ((1, "a"), (2, "b")):
        assert (work / "out" / name / "final" / "lit_model.pth").is_file()
        text = log(work, "two.txt", task)
        assert (
            f"task {task} (restart 0)" in text
            and "first launch" in text
            and f"task {task} finished: out/{name}" in text
        )
    again = submit(env, work, "two.txt", "--array=1")
    assert again.returncode == 0 and "out/a/final exists: this run is finished, nothing to do" in log(
        work, "two.txt", 1
    )
    out_of_range = submit(env, work, "two.txt", "--array=3")
    assert out_of_range.returncode != 0
    assert "array task 3 is out of range: " in log(
        work, "two.txt", 3
    ) and "lists 2 config(s), so use --array=1-2" in log(work, "two.txt", 3)


def test_a_cancelled_task_resubmitted_resumes_from_its_last_checkpoint(cluster):
    env, work = cluster
    (work / "long.txt").write_text(write_config(work, "long", 60, 5, "main/1:0.5,c1:0.3,m1:0.2") + "\n")
    result = submit(env, work, "long.txt", wait=False)
    job = re.search(r"Submitted batch job (\d+)", result.stdout).group(1)
    deadline = time.time() + 300
    while not (work / "out" / "long" / "step-00000010" / "lit_model.pth").is_file():
        assert time.time() < deadline, log(work, "long.txt", 1)[-3000:]
        time.sleep(0.3)
    subprocess.run(["scancel", job], env=env, check=True)
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, env=env).stdout.strip():
        time.sleep(0.5)
    assert not (work / "out" / "long" / "final").exists()  # cancelled mid-run
    checkpoint, _ = newest_loadable_checkpoint(work / "out" / "long")  # the cancel may cut a newer save short
    newest = checkpoint.relative_to(work)
    resumed = submit(env, work, "long.txt", "--array=1")
    assert resumed.returncode == 0, log(work, "long.txt", 1)[-3000:]
    text = log(work, "long.txt", 1)
    assert f"relaunch: resuming from {newest}, the newest complete checkpoint in out_dir" in text
    assert f"Resuming training from {newest}" in text
    assert (work / "out" / "long" / "final" / "lit_model.pth").is_file()

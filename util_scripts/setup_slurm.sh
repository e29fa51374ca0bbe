#!/usr/bin/env bash
# Install Debian's slurm-wlm and munge for the local cluster test (tests/e2e/test_slurm_cluster.py), if they are
# missing and we can: as root, with apt-get. Never fails: where they cannot be installed it says why, and the
# cluster test is skipped with that reason.
set -uo pipefail
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "[setup_slurm] slurm-wlm/munge are not installed and cannot be installed here (needs root and apt-get); the SLURM cluster test will be skipped"
    exit 0
fi
echo "[setup_slurm] installing slurm-wlm and munge (Debian packages) for the local cluster test ..."
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; }; then
    echo "[setup_slurm] apt-get install slurm-wlm munge failed; the SLURM cluster test will be skipped"
fi
exit 0

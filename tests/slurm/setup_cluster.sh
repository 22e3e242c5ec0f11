#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests/test_slurm.py.
#
# Installs Debian's slurm-wlm and munge, writes a minimal slurm.conf for this host (no
# accounting database, no cgroups), and starts munged, slurmctld and slurmd as root. Safe to run
# again: daemons already answering are left alone. Needs root and apt; prints why and exits 1
# where it cannot (the test is then skipped with that reason).
set -euo pipefail

log() { echo "setup_cluster: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "needs root (it installs packages and starts slurmctld/slurmd)"; exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || { log "no apt-get: install slurm-wlm and munge yourself"; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q slurm-wlm munge
fi

HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
CONF=/etc/slurm/slurm.conf

# munge: a key, and the daemon (it refuses to run with loose permissions).
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
        || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --force
    sleep 1
fi
munge -n </dev/null | unmunge >/dev/null || { log "munged does not answer"; exit 1; }

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
chown slurm:slurm /var/spool/slurmctld /var/log/slurm
# KillWait 5: a job that ignores SIGTERM (scancel, requeue) is killed 5 s later, not 30.
# MinJobAge 600: finished jobs stay visible to squeue/scontrol for 10 minutes (no slurmdbd).
cat >"$CONF.new" <<EOF
# Written by tests/slurm/setup_cluster.sh: a single-node test cluster on $HOST.
ClusterName=ktrdr-test
SlurmctldHost=$HOST
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=5
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
JobRequeue=1
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
mv "$CONF.new" "$CONF"
# slurmd 22.05 loads a cgroup plugin even when nothing uses it: let it autodetect (v1 or v2);
# ProctrackType/TaskPlugin above keep jobs out of cgroups.
printf 'CgroupPlugin=autodetect\nCgroupMountpoint=/sys/fs/cgroup\n' >/etc/slurm/cgroup.conf

if ! pgrep -x slurmctld >/dev/null; then
    /usr/sbin/slurmctld
fi
if ! pgrep -x slurmd >/dev/null; then
    /usr/sbin/slurmd
fi

for _ in $(seq 60); do
    state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
    case "$state" in
        idle*|mix*|alloc*) log "cluster up: node $HOST $state"; exit 0 ;;
        down*|drain*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
log "slurmd on $HOST did not come up (sinfo: ${state:-no answer}); see /var/log/slurm/*.log"
exit 1

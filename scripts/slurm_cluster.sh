#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for CI and for trying `reproduce.py --launcher slurm` locally.
#
#   scripts/slurm_cluster.sh start     # install slurm-wlm + munge if missing, write the config, start the daemons
#   scripts/slurm_cluster.sh status    # the daemons' pids and `sinfo`
#   scripts/slurm_cluster.sh stop      # cancel the cluster's jobs, stop exactly the daemons `start` started
#
# Made for Debian (bookworm), run as root, without systemd or cgroups: proctrack/linuxproc, task/none, no
# accounting database (reproduce.py follows jobs through their result files and squeue); ended jobs are
# logged to $STATE/jobcomp.txt, which `sacct --completion` lists. One partition `debug`
# (default, no time limit) with this host as its only node: all its CPUs (nproc) and its memory (free -m)
# minus SLURM_CLUSTER_MEM_MARGIN_MB (default 1024). Jobs that ask for no memory get their share per CPU.
# Requeued jobs may start again after AuthInfo cred_expire (Slurm's default: 120 s; here 5 s).
#
# State, logs and pid files live in SLURM_CLUSTER_DIR (default /var/tmp/dimtoolkit-slurm); the config goes to
# /etc/slurm/slurm.conf (where sinfo and sbatch look) and is only replaced when this script wrote it.
set -euo pipefail

STATE=${SLURM_CLUSTER_DIR:-/var/tmp/dimtoolkit-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by dimtoolkit scripts/slurm_cluster.sh"
MARGIN_MB=${SLURM_CLUSTER_MEM_MARGIN_MB:-1024}
WAIT_S=${SLURM_CLUSTER_WAIT_S:-60}

die() { echo "slurm_cluster: $*" >&2; exit 1; }
say() { echo "slurm_cluster: $*"; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sinfo >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are missing; run as root to install them"
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null 2>&1; then
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
    fi
}

munge_key() {
    local key=/etc/munge/munge.key
    mkdir -p /etc/munge
    if [ ! -s "$key" ]; then
        say "creating $key"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$key" --force
        else
            dd if=/dev/urandom bs=1 count=1024 of="$key" status=none
        fi
    fi
    chown munge:munge "$key" /etc/munge
    chmod 0400 "$key"
    chmod 0700 /etc/munge
}

write_config() {
    local host cpus mem_mb real_mb defmem
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)  # what `free -m` shows as total
    real_mb=$((mem_mb - MARGIN_MB))
    [ "$real_mb" -gt 256 ] || die "only ${mem_mb} MB of memory: too little for a cluster"
    defmem=$((real_mb / cpus))
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; move it away to start the local cluster"
    fi
    mkdir -p "$(dirname "$CONF")" "$STATE/ctld" "$STATE/slurmd"
    cat > "$CONF.tmp" <<EOF
$MARK; scripts/slurm_cluster.sh stop leaves it in place
ClusterName=dimtoolkit
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=5
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.txt
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE DefMemPerCPU=$defmem State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for_file() {  # wait_for_file PATH SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do [ -s "$1" ] && return 0; sleep 0.1; done
    return 1
}

start_munge() {
    if pid_alive "$STATE/munged.pid"; then return; fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 0755 /run/munge
    rm -f "$STATE/munged.pid" /run/munge/dimtoolkit-munged.pid
    # munged forks into the background, as user munge; its pid file (in its own folder) names the daemon
    runuser -u munge -- munged --pid-file=/run/munge/dimtoolkit-munged.pid \
        || die "munged did not start (see /var/log/munge/munged.log)"
    wait_for_file /run/munge/dimtoolkit-munged.pid 10 || die "munged wrote no pid file"
    cp /run/munge/dimtoolkit-munged.pid "$STATE/munged.pid"
    munge -n | unmunge >/dev/null || die "munge does not answer"
}

start() {
    [ "$(id -u)" = 0 ] || die "start needs root (daemons, /etc/slurm)"
    local started
    started=$(date +%s.%N)
    install_packages
    mkdir -p "$STATE"
    chmod 0755 "$STATE"
    munge_key
    write_config
    start_munge
    if ! pid_alive "$STATE/slurmctld.pid"; then
        rm -f "$STATE/slurmctld.pid"
        slurmctld || die "slurmctld did not start (see $STATE/slurmctld.log)"
        wait_for_file "$STATE/slurmctld.pid" 20 || die "slurmctld wrote no pid file (see $STATE/slurmctld.log)"
    fi
    if ! pid_alive "$STATE/slurmd.pid"; then
        rm -f "$STATE/slurmd.pid"
        slurmd || die "slurmd did not start (see $STATE/slurmd.log)"
        wait_for_file "$STATE/slurmd.pid" 20 || die "slurmd wrote no pid file (see $STATE/slurmd.log)"
    fi
    local i state=""
    for ((i = 0; i < WAIT_S; i++)); do
        state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
        case "$state" in idle | mix | alloc) break ;; esac
        if [ "$i" = 10 ] && [ -n "$state" ]; then  # a node left down/drained by a previous session
            scontrol update NodeName="$(hostname -s)" State=RESUME 2>/dev/null || true
        fi
        sleep 1
    done
    case "$state" in
        idle | mix | alloc) ;;
        *) die "node not idle after ${WAIT_S}s (state '${state}'); see $STATE/slurmctld.log and $STATE/slurmd.log" ;;
    esac
    say "cluster up in $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')s:"
    sinfo
}

stop_pid() {  # stop_pid NAME: TERM the daemon named in its pid file, KILL after 20 s
    local file="$STATE/$1.pid" pid i
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$1 ($pid) ignored SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        say "stopped $1 ($pid)"
    fi
    rm -f "$file"
}

stop() {
    if pid_alive "$STATE/slurmctld.pid" && command -v scancel >/dev/null; then
        local i
        scancel --full --quiet --state=PENDING,RUNNING,SUSPENDED,REQUEUED 2>/dev/null || true  # this cluster's jobs
        for ((i = 0; i < 60; i++)); do
            [ -z "$(squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ] && break
            sleep 1
        done
    fi
    stop_pid slurmd
    stop_pid slurmctld
    stop_pid munged
}

status() {
    local name rc=0
    for name in munged slurmctld slurmd; do
        if pid_alive "$STATE/$name.pid"; then
            echo "$name: running (pid $(cat "$STATE/$name.pid"))"
        else
            echo "$name: not running"
            rc=1
        fi
    done
    if [ "$rc" = 0 ]; then sinfo; fi
    return "$rc"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

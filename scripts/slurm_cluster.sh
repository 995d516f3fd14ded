#!/usr/bin/env bash
# A single-node Slurm cluster with accounting, on this machine's loopback interface only.
#
#   scripts/slurm_cluster.sh start DIR   # prints the `export SLURM_CONF=...` line to use it
#   scripts/slurm_cluster.sh stop DIR    # ends every daemon it started, by its own PID
#
# Debian's packages (slurm-wlm 22.05: slurmctld, slurmd, slurmdbd; munge; MariaDB for the
# accounting database that submitit reads job states from) are installed if missing (needs
# root and a package mirror). Everything else lives under DIR: configuration, munge key and
# socket, the database, spool and state directories, logs and PID files. Every daemon listens
# on 127.0.0.1 (MariaDB, slurmdbd, slurmctld, slurmd: NodeAddr=127.0.0.1) on ports chosen free
# at start; nothing is written to /etc and no system service is started.
set -euo pipefail

PACKAGES=(slurm-wlm slurmctld slurmd slurmdbd slurm-client munge mariadb-server)
CLUSTER=lowdiff
NODE=lowdiff-node
PARTITION=debug
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged) # stop order: the reverse of start

die() { echo "slurm_cluster.sh: $*" >&2; exit 1; }

install_packages() {
    local missing=()
    for command in slurmctld slurmd slurmdbd munged mariadbd sbatch sacct; do
        command -v "$command" >/dev/null || missing+=("$command")
    done
    [ ${#missing[@]} -eq 0 ] && return
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; install ${PACKAGES[*]} (needs root)"
    echo "installing ${PACKAGES[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${PACKAGES[@]}" >/dev/null
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    while [ $SECONDS -lt $deadline ]; do
        timeout 10 "$@" >/dev/null 2>&1 && return
        sleep 0.2
    done
    die "$what did not come up in time; logs in $DIR/log"
}

start_munge() {
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1 count=1024 status=none
    chmod 700 "$DIR/munge"
    chmod 400 "$DIR/munge/munge.key"
    # --force: the scratch directory is not one of the system paths munged insists on
    munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.sock" \
        --pid-file="$DIR/pid/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munge.seed" </dev/null >>"$DIR/log/daemons.log" 2>&1
    wait_for 10 munged munge --socket="$DIR/munge/munge.sock" -n
}

start_mariadb() {
    mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root \
        --auth-root-authentication-method=normal >"$DIR/log/mariadb-install.log" 2>&1
    mariadbd --no-defaults --datadir="$DIR/mysql" --user=root --bind-address=127.0.0.1 \
        --port="$DB_PORT" --socket="$DIR/mysql.sock" --pid-file="$DIR/pid/mariadbd.pid" \
        --log-error="$DIR/log/mariadb.log" --skip-name-resolve </dev/null >/dev/null 2>&1 &
    wait_for 30 MariaDB mariadb --no-defaults --socket="$DIR/mysql.sock" -uroot -e 'select 1'
    mariadb --no-defaults --socket="$DIR/mysql.sock" -uroot -e "
        CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

write_configs() {
    local host cpus
    host=$(hostname -s)
    cpus=$(nproc)
    cat >"$DIR/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/pid/slurmctld.pid
SlurmdPidFile=$DIR/pid/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=socket=$DIR/munge/munge.sock
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=30
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$cpus State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    # slurmdbd reads slurmdbd.conf beside slurm.conf ($SLURM_CONF); it must be private
    cat >"$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.sock
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
PidFile=$DIR/pid/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
EOF
    chmod 600 "$DIR/slurmdbd.conf"
}

start_slurm() {
    export SLURM_CONF="$DIR/slurm.conf"
    slurmdbd </dev/null >>"$DIR/log/daemons.log" 2>&1
    wait_for 30 slurmdbd sacctmgr -i list cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    slurmctld </dev/null >>"$DIR/log/daemons.log" 2>&1
    wait_for 30 slurmctld scontrol ping
    slurmd -N "$NODE" </dev/null >>"$DIR/log/daemons.log" 2>&1
    wait_for 30 "node $NODE" sh -c "sinfo -h -N -o %t | grep -qx idle"
}

start() {
    [ -e "$DIR/pid" ] && die "$DIR already holds a cluster; stop it first ($0 stop $DIR)"
    install_packages
    mkdir -p "$DIR"/{munge,mysql,state,spool,pid,log}
    DIR=$(cd "$DIR" && pwd)
    DB_PORT=$(free_port) DBD_PORT=$(free_port) CTLD_PORT=$(free_port) SLURMD_PORT=$(free_port)
    DB_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    start_munge
    start_mariadb
    write_configs
    start_slurm
    echo "export SLURM_CONF=$DIR/slurm.conf"
}

stop() {
    [ -d "$DIR/pid" ] || return 0
    if [ -e "$DIR/slurm.conf" ]; then # end the jobs first, so no job outlives its daemons
        SLURM_CONF="$DIR/slurm.conf" timeout 10 scancel --full --quiet --user "$(id -un)" \
            2>/dev/null || true
    fi
    for daemon in "${DAEMONS[@]}"; do
        local file="$DIR/pid/$daemon.pid" pid
        [ -s "$file" ] || continue
        pid=$(cat "$file")
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
        rm -f "$file"
    done
    rmdir "$DIR/pid" 2>/dev/null || true
}

[ $# -eq 2 ] || die "usage: $0 start|stop DIR"
DIR=$2
case $1 in
    start) start ;;
    stop) stop ;;
    *) die "usage: $0 start|stop DIR" ;;
esac

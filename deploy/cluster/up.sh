#!/bin/sh
# Brings up zms in cluster mode on loopback, in a new temporary directory: etcd, two PostgreSQL
# nodes under Patroni (one primary, one synchronous standby), a message server and two group
# servers sharing the database. Prints the directory; `down.sh DIR` stops it all.
#
#   deploy/cluster/up.sh                 # ports from 15400 (ZMS_CLUSTER_PORT to move them)
#   ZMS=target/release/zms deploy/cluster/up.sh
#
# Needs: patroni, etcd (Debian: apt-get install -y patroni etcd-server python3-etcd),
# PostgreSQL's server programs (postgresql), psql, and a built zms. Run as root it runs
# Patroni (and so PostgreSQL) as the `postgres` user.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
base=${ZMS_CLUSTER_PORT:-15400}
# The zms to run: $ZMS, else the one on PATH, else this checkout's release build.
zms=${ZMS:-$(command -v zms || echo "$repo/target/release/zms")}
[ -x "$zms" ] || { echo "error: no zms binary at $zms (cargo build --release, or set ZMS)" >&2; exit 1; }
bin_dir=${PG_BIN_DIR:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
for program in patroni etcd psql "$bin_dir/postgres"; do
    command -v "$program" >/dev/null || { echo "error: $program is not installed" >&2; exit 1; }
done

dir=$(mktemp -d /tmp/zms-cluster.XXXXXX)
chmod 755 "$dir"
etcd_port=$base
etcd_peer=$((base + 1))
pg1=$((base + 2)); pg2=$((base + 3))
api1=$((base + 4)); api2=$((base + 5))
directory=$((base + 6))
group1=$((base + 7)); group2=$((base + 8))

# Patroni runs as the `postgres` user when this is root (PostgreSQL refuses to run as root);
# setpriv execs it, so the pid recorded is Patroni's own.
as_pg=
if [ "$(id -u)" = 0 ]; then as_pg="setpriv --reuid=postgres --regid=postgres --init-groups"; fi
# Starts a program in the background with its output in $dir/NAME.log; its pid in $dir/NAME.pid.
start() {
    name=$1; shift
    "$@" </dev/null >"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
}
# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
    limit=$1; shift
    i=0
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -le $((limit * 5)) ] || { echo "error: timed out waiting for: $*" >&2; exit 1; }
        sleep 0.2
    done
}

cat >"$dir/env" <<VARS
DIR=$dir
ZMS=$zms
PG_PORTS="$pg1 $pg2"
API_PORTS="$api1 $api2"
SERVER=127.0.0.1:$directory
STORE='host=127.0.0.1,127.0.0.1 port=$pg1,$pg2 user=zms dbname=zms target_session_attrs=read-write'
VARS

start etcd etcd --name zms-etcd --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "zms-etcd=http://127.0.0.1:$etcd_peer"
wait_for 30 curl -fsS "http://127.0.0.1:$etcd_port/health"

for node in 1 2; do
    name=pg$node
    eval pg_port=\$pg$node
    eval api_port=\$api$node
    mkdir -p "$dir/$name"
    sed -e "s|@NAME@|$name|g" -e "s|@PG_PORT@|$pg_port|g" -e "s|@API_PORT@|$api_port|g" \
        -e "s|@ETCD_PORT@|$etcd_port|g" -e "s|@DIR@|$dir|g" -e "s|@BIN_DIR@|$bin_dir|g" \
        "$here/patroni.yml.in" >"$dir/$name/patroni.yml"
    if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$dir/$name"; fi
    # shellcheck disable=SC2086 # $as_pg is a command prefix, split on purpose
    start "$name" $as_pg patroni "$dir/$name/patroni.yml"
    if [ "$node" = 1 ]; then
        # The first node bootstraps the cluster and becomes the leader (GET /primary: 200).
        wait_for 120 curl -fsS "http://127.0.0.1:$api1/primary"
    fi
done
# Writes wait for a synchronous standby: wait until Patroni has made pg2 one.
wait_for 120 sh -c "curl -fsS http://127.0.0.1:$api1/cluster | grep -q '\"sync_standby\"'"

psql -h 127.0.0.1 -p "$pg1" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 \
    -c "CREATE USER zms" -c "CREATE DATABASE zms OWNER zms"

start message-server "$zms" message-server --bind "127.0.0.1:$directory"
store="host=127.0.0.1,127.0.0.1 port=$pg1,$pg2 user=zms dbname=zms target_session_attrs=read-write"
start group-server-1 "$zms" group-server --server "127.0.0.1:$directory" \
    --bind "127.0.0.1:$group1" --store "$store" --group general --group ops
start group-server-2 "$zms" group-server --server "127.0.0.1:$directory" \
    --bind "127.0.0.1:$group2" --store "$store"
wait_for 60 grep -q "listening on" "$dir/group-server-1.log"
wait_for 60 grep -q "listening on" "$dir/group-server-2.log"

cat <<DONE
zms cluster up in $dir
  message server  127.0.0.1:$directory     (zms user --server 127.0.0.1:$directory)
  PostgreSQL      127.0.0.1:$pg1 (pg1), 127.0.0.1:$pg2 (pg2); Patroni REST :$api1, :$api2
  store           $store
  logs            $dir/*.log
  stop            $here/down.sh $dir
DONE

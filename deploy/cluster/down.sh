#!/bin/sh
# Stops what up.sh started in DIR (its processes, by the pids it recorded) and removes DIR.
#
#   deploy/cluster/down.sh /tmp/zms-cluster.XXXXXX
set -u
dir=${1:?usage: down.sh DIR (the directory up.sh printed)}
[ -f "$dir/env" ] || { echo "error: $dir was not made by up.sh" >&2; exit 1; }
# zms first (the group servers hand their groups back), then Patroni (which stops its
# PostgreSQL), then etcd; each gets 30 s before SIGKILL.
for name in group-server-2 group-server-1 message-server pg2 pg1 etcd; do
    [ -f "$dir/$name.pid" ] || continue
    pid=$(cat "$dir/$name.pid")
    kill "$pid" 2>/dev/null || continue
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 150 ]; do sleep 0.2; i=$((i + 1)); done
    kill -9 "$pid" 2>/dev/null || true
done
# A PostgreSQL left behind by a Patroni killed hard (failover.sh).
for node in pg1 pg2; do
    pidfile="$dir/$node/data/postmaster.pid"
    [ -f "$pidfile" ] && kill -9 "$(head -n 1 "$pidfile")" 2>/dev/null
done
rm -rf "$dir"
echo "stopped and removed $dir"

#!/bin/sh
# Checks a failover of the cluster up.sh started in DIR: sends a message, kills the Patroni
# leader's host as a power cut would (SIGKILL to Patroni and to its PostgreSQL), and measures
# how long until a send is acknowledged again; checks both messages are in the history; then
# starts the lost node's Patroni again and waits until it is the synchronous standby.
#
#   deploy/cluster/failover.sh /tmp/zms-cluster.XXXXXX
set -eu
dir=${1:?usage: failover.sh DIR (the directory up.sh printed)}
# shellcheck disable=SC1091
. "$dir/env"
export ZMS_HOME="$dir/home"
mkdir -p "$ZMS_HOME"
zms() { timeout 20 "$ZMS" "$@" --server "$SERVER" --name failover-check; }

leader=
for port in $API_PORTS; do
    if curl -fsS "http://127.0.0.1:$port/primary" >/dev/null 2>&1; then leader=$port; fi
done
[ -n "$leader" ] || { echo "error: no Patroni leader" >&2; exit 1; }
node=pg1
[ "$leader" = "$(echo "$API_PORTS" | cut -d' ' -f2)" ] && node=pg2
echo "leader: $node (REST :$leader)"

zms join general >/dev/null
zms send general "before the failover"

patroni=$(cat "$dir/$node.pid")
postmaster=$(head -n 1 "$dir/$node/data/postmaster.pid")
started=$(date +%s%N)
# The leader's host is gone: nothing of it answers or says goodbye.
kill -9 "$patroni" "$postmaster" $(pgrep -P "$postmaster") 2>/dev/null || true
echo "killed Patroni ($patroni) and PostgreSQL ($postmaster) of $node"

tries=0
until zms send general "after the failover" 2>"$dir/failover.err"; do
    tries=$((tries + 1))
    [ "$tries" -lt 120 ] || { echo "error: no send acknowledged in 120 tries:" >&2; cat "$dir/failover.err" >&2; exit 1; }
    sleep 1
done
took=$(( ($(date +%s%N) - started) / 1000000 ))
echo "a send was acknowledged again after ${took} ms ($tries refused or unanswered before)"
zms history general | tail -n 2

# The lost host comes back: its Patroni rejoins as a replica (pg_rewind if needed).
as_pg=
if [ "$(id -u)" = 0 ]; then as_pg="setpriv --reuid=postgres --regid=postgres --init-groups"; fi
# shellcheck disable=SC2086 # $as_pg is a command prefix, split on purpose
$as_pg patroni "$dir/$node/patroni.yml" </dev/null >>"$dir/$node.log" 2>&1 &
echo $! >"$dir/$node.pid"
other=$(echo "$API_PORTS" | tr ' ' '\n' | grep -v "^$leader$")
i=0
until curl -fsS "http://127.0.0.1:$other/cluster" | grep -q '"sync_standby"'; do
    i=$((i + 1))
    [ "$i" -lt 600 ] || { echo "error: $node did not come back as synchronous standby" >&2; exit 1; }
    sleep 0.2
done
echo "$node is back as the synchronous standby"

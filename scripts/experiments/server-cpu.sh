#!/usr/bin/env bash
# Runs one `zms bench WORKLOAD --server …` against a message server and a group server started
# here, and prints the bench's JSON line, then the CPU each group server thread and the bench
# process used during it (from /proc/PID/task/*/stat and /usr/bin/time).
#
#   ZMS=target/release/zms PIN=0 bash scripts/experiments/server-cpu.sh rtt
#
# PIN, if set, is a `taskset -c` CPU list for all three processes (PIN=0: everything on one CPU).
# Threads are listed as NAME-TID: `group` serves, `checkpoint` checkpoints, and libzmq's I/O
# thread carries the process's name, `zms`.
set -euo pipefail
ZMS=${ZMS:-target/release/zms}
WORKLOAD=$1
shift
PIN=${PIN:-$(seq -s, 0 $(($(nproc) - 1)))}
DIR=$(mktemp -d)
trap 'kill $GROUP $DIRECTORY 2>/dev/null; wait 2>/dev/null; rm -rf "$DIR"' EXIT
listening() { # file → HOST:PORT once the server has printed it (at most 5 s)
  for _ in $(seq 50); do
    grep -q listening "$1" && break
    sleep 0.1
  done
  grep -o 'listening on [0-9.:]*' "$1" | awk '{print $3}'
}
taskset -c "$PIN" "$ZMS" message-server --bind 127.0.0.1:0 >"$DIR/ms.out" 2>"$DIR/ms.log" &
DIRECTORY=$!
SERVER=$(listening "$DIR/ms.out")
taskset -c "$PIN" "$ZMS" group-server --server "$SERVER" --bind 127.0.0.1:0 --group bench \
  --data "$DIR/data" >"$DIR/gs.out" 2>"$DIR/gs.log" &
GROUP=$!
listening "$DIR/gs.out" >/dev/null
threads() { # "name-tid ticks" per group server thread
  for t in /proc/$GROUP/task/*; do
    echo "$(tr -d ' ' <"$t/comm")-${t##*/} $(awk '{print $14 + $15}' "$t/stat")"
  done | sort
}
threads >"$DIR/before"
taskset -c "$PIN" /usr/bin/time -f "bench process: user %U s, system %S s, wall %e s" \
  -o "$DIR/time" "$ZMS" bench "$WORKLOAD" --server "$SERVER" "$@" 2>/dev/null
threads >"$DIR/after"
TICK=$(getconf CLK_TCK)
join "$DIR/before" "$DIR/after" |
  awk -v tick="$TICK" '{ printf "%s %.0f ms  ", $1, ($3 - $2) * 1000 / tick } END { print "" }'
cat "$DIR/time"

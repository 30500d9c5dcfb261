#!/bin/sh
# zms in cluster mode against NATS JetStream R3, side by side on loopback, RUNS times (3):
#   - zms: a PostgreSQL primary whose commits wait for a synchronous streaming standby (both
#     with fsync on, as in production), one group server with --store on the primary;
#   - JetStream: three nats-server nodes in one cluster, a file stream with 3 replicas
#     (a publish is acknowledged once two nodes have it).
# Workloads: ingest (4 pipelining senders), fanout to 10 members, send-to-ack round trip.
# Every JSON line goes to OUT (bench/results/cluster.jsonl); a summary to stdout.
# PG_SETTINGS adds PostgreSQL settings to both instances: PG_SETTINGS='-c fsync=off' keeps the
# synchronous replication but flushes on neither host, as JetStream acknowledges by default
# (a quorum has it, its sync_interval flushes every 2 minutes).
#
#   cargo build --release --workspace
#   bench/scripts/cluster_compare.sh [RUNS] [MESSAGES]
#
# Needs PostgreSQL's server programs (Debian postgresql), psql and nats-server. As root,
# PostgreSQL runs as the `postgres` user.
set -eu
runs=${1:-3}
messages=${2:-20000}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bench=${BENCH:-$repo/target/release/zms-bench}
out=${OUT:-$repo/bench/results/cluster.jsonl}
bin_dir=${PG_BIN_DIR:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
base=${BENCH_PORT:-15500}
pg1=$base; pg2=$((base + 1))
dir=$(mktemp -d /tmp/zms-bench-cluster.XXXXXX)
chmod 755 "$dir"
as_pg=
if [ "$(id -u)" = 0 ]; then as_pg="runuser -u postgres --"; chown postgres "$dir"; fi

nats_pids=
cleanup() {
    for pid in $nats_pids; do kill "$pid" 2>/dev/null; done
    for node in standby primary; do
        [ -d "$dir/$node" ] && $as_pg "$bin_dir/pg_ctl" -D "$dir/$node" -m immediate -w stop >/dev/null 2>&1
    done
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# PostgreSQL: primary + synchronous standby.
$as_pg "$bin_dir/initdb" -D "$dir/primary" -U zms --auth=trust -E UTF8 >/dev/null
settings="-c listen_addresses=127.0.0.1 -k $dir -c max_connections=50 ${PG_SETTINGS:-}"
$as_pg "$bin_dir/pg_ctl" -D "$dir/primary" -l "$dir/primary.log" -w \
    -o "-p $pg1 $settings -c synchronous_commit=on -c synchronous_standby_names='*'" start >/dev/null
$as_pg "$bin_dir/pg_basebackup" -h 127.0.0.1 -p "$pg1" -U zms -D "$dir/standby" -R -X stream -c fast
$as_pg "$bin_dir/pg_ctl" -D "$dir/standby" -l "$dir/standby.log" -w -o "-p $pg2 $settings" start >/dev/null
until [ "$(psql -h 127.0.0.1 -p "$pg1" -U zms -d postgres -X -A -t -c \
    "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")" = 1 ]; do sleep 0.2; done

# NATS: three JetStream nodes in one cluster.
for n in 1 2 3; do
    routes=
    for m in 1 2 3; do
        [ "$m" = "$n" ] || routes="$routes${routes:+,}nats://127.0.0.1:$((base + 20 + m))"
    done
    nats-server -js -sd "$dir/nats$n" -n "n$n" -a 127.0.0.1 -p $((base + 10 + n)) -m $((base + 30 + n)) \
        --cluster_name zmsbench --cluster "nats://127.0.0.1:$((base + 20 + n))" --routes "$routes" \
        >"$dir/nats$n.log" 2>&1 &
    nats_pids="$nats_pids $!"
done
i=0
until curl -fsS "http://127.0.0.1:$((base + 31))/jsz" 2>/dev/null | grep -q '"leader"'; do
    i=$((i + 1)); [ "$i" -lt 300 ] || { echo "error: no JetStream meta leader" >&2; exit 1; }
    sleep 0.2
done

mkdir -p "$(dirname "$out")"
: >"$out"
for run in $(seq 1 "$runs"); do
    db=bench$run
    psql -h 127.0.0.1 -p "$pg1" -U zms -d postgres -X -q -c "CREATE DATABASE $db"
    store="host=127.0.0.1 port=$pg1 user=zms dbname=$db"
    for workload in ingest fanout rtt; do
        "$bench" "$workload" --store "$store" --group "$workload" --messages "$messages" \
            | sed "s/^{/{\"system\":\"zms cluster\",\"run\":$run,/" >>"$out"
    done
    "$bench" nats --nats "127.0.0.1:$((base + 11))" --jetstream --replicas 3 --messages "$messages" \
        | sed "s/^{/{\"system\":\"jetstream r3\",\"run\":$run,/" >>"$out"
    echo "run $run of $runs done" >&2
done

python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def figures(system, pick):
    return [pick(r) for r in rows if r["system"] == system and pick(r) is not None]
def zms(workload, field):
    return lambda r: r.get(field) if r.get("workload") == workload else None
def js(part, field):
    return lambda r: (r.get(part) or {}).get(field) if "replicas" in r else None
table = [
    ("ingest msgs/s", zms("ingest", "msgs_per_s"), js("ingest", "msgs_per_s"), "higher"),
    ("fanout deliveries/s", zms("fanout", "deliveries_per_s"), js("fanout", "deliveries_per_s"), "higher"),
    ("rtt p50 us", zms("rtt", "p50_us"), js("rtt", "p50_us"), "lower"),
    ("rtt p99 us", zms("rtt", "p99_us"), js("rtt", "p99_us"), "lower"),
]
print("| figure | zms cluster (range) | JetStream R3 (range) | zms / JetStream (median) |")
print("|---|---|---|---|")
for name, z, j, better in table:
    a, b = sorted(figures("zms cluster", z)), sorted(figures("jetstream r3", j))
    if not a or not b:
        print(f"| {name} | {a} | {b} | n/a |"); continue
    med = lambda v: v[len(v) // 2]
    print(f"| {name} | {a[0]:,.0f}–{a[-1]:,.0f} | {b[0]:,.0f}–{b[-1]:,.0f} | {med(a) / med(b):.2f} ({better} is better) |")
PY

#!/usr/bin/env python3
"""Run `zms-bench` and the same workloads against NATS (core and JetStream) and Redis in one go.

Each run executes, on this machine and only on 127.0.0.1:
  zms-bench all                       fanout, latency, rtt, ingest, history, scale, raw libzmq
  zms-bench fanout|ingest --batch 1   the senders with one SEND per message, for reference
  zms-bench nats --nats CORE          core NATS (nats-server)
  zms-bench nats --nats JS --jetstream  JetStream, file storage (nats-server -js)
  zms-bench redis --redis R           ingest as pipelined XADDs (redis-server, append-only file
                                      written every second); skipped without redis-server

zms-bench starts its servers from the `zms` binary beside it (or $ZMS_BIN), so build both first:
  cargo build --release --workspace   # target/release/zms and target/release/zms-bench

and writes into --out (default bench/results/):
  results.jsonl    every JSON line, tagged with its run number
  summary.md       machine, measured ranges, goals met/missed, the comparison table
  comparison.svg   fanout throughput and latency percentiles: zms, NATS core, JetStream, raw

The NATS and Redis figures come from zms-bench's own clients of those protocols, so every
system is driven by the same process, payload, credit and percentile code. Standard library only.

  python3 bench/scripts/bench_compare.py --runs 3          # about 3 minutes a run on 2 cores
  python3 bench/scripts/bench_compare.py --quick --runs 1  # tiny counts: checks the script works
  python3 bench/scripts/bench_compare.py --bench-bin target/profiling/zms-bench  # another build
"""

import argparse
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The repository: this file is bench/scripts/bench_compare.py.
ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--messages", "2000", "--duration", "0.5", "--stored", "20000", "--groups", "2000",
         "--lists", "50"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, limit=10.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"nats-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling a port that is not open yet; bounded by the deadline
    sys.exit(f"nats-server did not listen on {port} within {limit} s")


def wait_redis(port, proc, log, limit=10.0):
    """Returns once the redis-server on `port` answers PING (it may still be loading its AOF)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"redis-server exited with {proc.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.settimeout(0.5)
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)  # polling a server that is not up yet; bounded by the deadline
    sys.exit(f"redis-server did not answer PING on {port} within {limit} s")


def default_bench_bin():
    """zms-bench in cargo's release directory ($CARGO_TARGET_DIR, else the repository's target/)."""
    target = os.environ.get("CARGO_TARGET_DIR") or ROOT / "target"
    return Path(target) / "release" / "zms-bench"


def bench(bench_bin, args, timeout):
    """Runs `zms-bench ARGS`, returns its JSON lines; stderr (progress) passes through."""
    cmd = [str(bench_bin), *args]
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, stdout=subprocess.PIPE, timeout=timeout, check=False, text=True)
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed with {out.returncode}")
    return lines


def machine(commit=None):
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    nats = "nats-server not installed"
    if shutil.which("nats-server"):
        nats = subprocess.run(["nats-server", "--version"], capture_output=True,
                              text=True).stdout
    redis = "redis-server not installed"
    if shutil.which("redis-server"):
        redis = subprocess.run(["redis-server", "--version"], capture_output=True,
                               text=True).stdout
    commit = commit or subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                      capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "nats_server": nats.strip(),
        "redis_server": redis.strip(),
        "commit": commit,
    }


def cpu_ticks():
    """(stolen, total) jiffies of all CPUs so far, from /proc/stat (None where it is absent)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(f) for f in fields[:8]]
    return ticks[7], sum(ticks)


def stolen_pct(before, after):
    """The share of CPU time the hypervisor gave to other guests between two cpu_ticks()."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100.0 * (after[0] - before[0]) / (after[1] - before[1]), 1)


def redis_run(bench_bin, scratch, extra, quick, timeout):
    """One redis-server with durability like zms's default (a log written before the reply,
    fsync'd once a second rather than per commit), `zms-bench redis` against it, then stopped."""
    port = free_port()
    data = scratch / "redis"
    data.mkdir()
    log = data / "redis.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                                 "--dir", str(data)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_redis(port, proc, log)
        lines = bench(bench_bin, ["redis", "--redis", f"127.0.0.1:{port}", *extra,
                            *(QUICK if quick else [])], timeout)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for line in lines:
        line["workload"] = "redis-xadd"
    return lines


def one_run(bench_bin, run, extra, quick, timeout, redis):
    lines = []
    scratch = Path(tempfile.mkdtemp(prefix="zms-bench-nats-"))
    core_port, js_port = free_port(), free_port()
    servers = []
    try:
        core = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(core_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers.append(core)
        js = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(js_port), "-js",
                               "-sd", str(scratch / "js")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers.append(js)
        wait_listening(core_port, core)
        wait_listening(js_port, js)
        all_args = ["all", *extra]
        if quick:
            all_args += QUICK
        lines += bench(bench_bin, all_args, timeout)
        # The same senders with one SEND per message instead of SENDS batches, for reference.
        for workload in ("fanout", "ingest"):
            for line in bench(bench_bin, [workload, "--batch", "1", *extra,
                                    *(QUICK if quick else [])], timeout):
                line["workload"] = f"{workload}-send"
                lines.append(line)
        nats_args = [*extra, *(QUICK if quick else [])]
        for line in bench(bench_bin, ["nats", "--nats", f"127.0.0.1:{core_port}", *nats_args], timeout):
            line["workload"] = "nats-core"
            lines.append(line)
        for line in bench(bench_bin, ["nats", "--nats", f"127.0.0.1:{js_port}", "--jetstream",
                                *nats_args], timeout):
            line["workload"] = "nats-jetstream"
            lines.append(line)
        if redis:
            lines += redis_run(bench_bin, scratch, extra, quick, timeout)
    finally:
        for proc in servers:
            proc.terminate()
        for proc in servers:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(scratch, ignore_errors=True)
    for line in lines:
        line["run"] = run
    return lines


def get(lines, run, workload, *path):
    for line in lines:
        if line["run"] == run and line["workload"] == workload:
            value = line
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            return value
    return None


def fmt(x, unit=""):
    if x is None:
        return "n/a"
    if float(x).is_integer() and abs(x) < 100_000:
        return f"{int(x)}{unit}"
    if abs(x) >= 100_000:
        return f"{x / 1e6:.2f}M{unit}" if abs(x) >= 1e6 else f"{x / 1e3:.0f}k{unit}"
    if abs(x) >= 100:
        return f"{x:.0f}{unit}"
    return f"{x:.2f}{unit}" if abs(x) < 10 else f"{x:.1f}{unit}"


def span(values, unit=""):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    lo, hi = min(values), max(values)
    return fmt(lo, unit) if lo == hi else f"{fmt(lo, unit)} – {fmt(hi, unit)}"


# (label, workload, path, unit): what is quoted as a range over the runs.
FIGURES = [
    ("fanout deliveries/s", "fanout", ("deliveries_per_s",), ""),
    ("fanout lost", "fanout", ("lost",), ""),
    ("fanout stored", "fanout", ("stored",), ""),
    ("latency p50 µs", "latency", ("p50_us",), ""),
    ("latency p99 µs", "latency", ("p99_us",), ""),
    ("latency max µs", "latency", ("max_us",), ""),
    ("rtt p50 µs", "rtt", ("p50_us",), ""),
    ("rtt p99 µs", "rtt", ("p99_us",), ""),
    ("rtt sends/s", "rtt", ("per_s",), ""),
    ("ingest msgs/s", "ingest", ("msgs_per_s",), ""),
    ("fanout deliveries/s, one SEND per message (--batch 1)", "fanout-send",
     ("deliveries_per_s",), ""),
    ("ingest msgs/s, one SEND per message (--batch 1)", "ingest-send", ("msgs_per_s",), ""),
    ("history all ms", "history", ("all_ms",), ""),
    ("history since ms", "history", ("since_ms",), ""),
    ("scale LIST p99 ms (10,000 groups)", "scale", ("list_p99_ms",), ""),
    ("scale deliveries/s (1,000 members)", "scale", ("deliveries_per_s",), ""),
    ("scale group server peak RSS MiB", "scale", ("group_rss_mib",), ""),
    ("scale message server peak RSS MiB", "scale", ("directory_rss_mib",), ""),
    ("raw PUB/SUB deliveries/s", "raw", ("fanout", "deliveries_per_s"), ""),
    ("raw latency p50 µs", "raw", ("latency", "p50_us"), ""),
    ("raw latency p99 µs", "raw", ("latency", "p99_us"), ""),
    ("raw REQ/REP p50 µs", "raw", ("rtt", "p50_us"), ""),
    ("raw latency p99 µs, each end on its own context", "raw", ("latency_apart", "p99_us"), ""),
    ("raw REQ/REP p50 µs, each end on its own context", "raw", ("rtt_apart", "p50_us"), ""),
    ("NATS core deliveries/s", "nats-core", ("fanout", "deliveries_per_s"), ""),
    ("NATS core latency p99 µs", "nats-core", ("latency", "p99_us"), ""),
    ("JetStream deliveries/s", "nats-jetstream", ("fanout", "deliveries_per_s"), ""),
    ("JetStream latency p99 µs", "nats-jetstream", ("latency", "p99_us"), ""),
    ("Redis XADD pipelined msgs/s", "redis-xadd", ("ingest", "msgs_per_s"), ""),
]

# Workloads whose rows are left out of the summary when no run has them (an optional server).
OPTIONAL = {"redis-xadd"}


def ratio(a, b):
    return None if a is None or not b else a / b


def goals(lines, runs):
    """(goal, figure per run, met per run) for every goal in bench/BENCHMARKS.md."""
    rows = []

    def per_run(f):
        return [f(r) for r in runs]

    def g(run, w, *p):
        return get(lines, run, w, *p)

    rows.append(("fanout ≥ core NATS (zms ÷ NATS deliveries/s ≥ 1)",
                 per_run(lambda r: ratio(g(r, "fanout", "deliveries_per_s"),
                                         g(r, "nats-core", "fanout", "deliveries_per_s"))),
                 lambda x: x >= 1.0, "×"))
    rows.append(("fanout ≥ 0.6× raw PUB/SUB, storing every message",
                 per_run(lambda r: ratio(g(r, "fanout", "deliveries_per_s"),
                                         g(r, "raw", "fanout", "deliveries_per_s"))),
                 lambda x: x >= 0.6, "×"))
    rows.append(("latency p99 ≤ 1.5× raw",
                 per_run(lambda r: ratio(g(r, "latency", "p99_us"),
                                         g(r, "raw", "latency", "p99_us"))),
                 lambda x: x <= 1.5, "×"))
    rows.append(("rtt p50 ≤ 1.3× raw REQ/REP",
                 per_run(lambda r: ratio(g(r, "rtt", "p50_us"), g(r, "raw", "rtt", "p50_us"))),
                 lambda x: x <= 1.3, "×"))
    rows.append(("ingest ≥ 300k msgs/s", per_run(lambda r: g(r, "ingest", "msgs_per_s")),
                 lambda x: x >= 300_000, ""))
    if any(line["workload"] == "redis-xadd" for line in lines):
        rows.append(("ingest > Redis XADD pipelined (zms ÷ Redis)",
                     per_run(lambda r: ratio(g(r, "ingest", "msgs_per_s"),
                                             g(r, "redis-xadd", "ingest", "msgs_per_s"))),
                     lambda x: x > 1.0, "×"))
    rows.append(("history all ≤ 100 ms", per_run(lambda r: g(r, "history", "all_ms")),
                 lambda x: x <= 100, " ms"))
    rows.append(("history since ≤ 50 ms", per_run(lambda r: g(r, "history", "since_ms")),
                 lambda x: x <= 50, " ms"))
    rows.append(("group server < 64 MiB (1M messages, 1,000 members)",
                 per_run(lambda r: g(r, "scale", "group_rss_mib")), lambda x: x < 64, " MiB"))
    rows.append(("message server < 16 MiB (10,000 groups)",
                 per_run(lambda r: g(r, "scale", "directory_rss_mib")), lambda x: x < 16, " MiB"))
    rows.append(("LIST p99 < 5 ms (10,000 groups)",
                 per_run(lambda r: g(r, "scale", "list_p99_ms")), lambda x: x < 5, " ms"))
    return rows


def apart(lines, runs):
    """(what, ratio per run): zms against raw libzmq with each end on its own context, as a
    client and a server in two processes are. Context for the goals, not goals."""
    def g(run, w, *p):
        return get(lines, run, w, *p)

    return [
        ("latency p99, zms ÷ raw PUB/SUB apart",
         [ratio(g(r, "latency", "p99_us"), g(r, "raw", "latency_apart", "p99_us")) for r in runs]),
        ("rtt p50, zms ÷ raw REQ/REP apart",
         [ratio(g(r, "rtt", "p50_us"), g(r, "raw", "rtt_apart", "p50_us")) for r in runs]),
        ("rtt p50, raw REQ/REP apart ÷ one context",
         [ratio(g(r, "raw", "rtt_apart", "p50_us"), g(r, "raw", "rtt", "p50_us")) for r in runs]),
    ]


def summary(lines, runs, info, args):
    out = []
    out.append("## Machine\n")
    out.append(f"- {info['nproc']} cores: {info['cpu']}; {info['memory_gib']} GiB; "
               f"Linux {info['kernel']}")
    out.append(f"- zms at commit {info['commit']}; {info['nats_server']}; "
               f"{info.get('redis_server', 'redis-server not recorded')}")
    out.append(f"- runs: {len(runs)}; extra flags: {' '.join(args.extra) or 'none'}"
               f"{'; QUICK counts' if args.quick else ''}")
    stolen = [get(lines, r, "machine", "steal_pct") for r in runs]
    if any(v is not None for v in stolen):
        shown = ", ".join("n/a" if v is None else f"{v:g} %" for v in stolen)
        out.append(f"- CPU time stolen by the hypervisor for other guests, per run "
                   f"(`/proc/stat`): {shown}")
    out.append("")
    out.append("## Measured (range over the runs)\n")
    out.append("| figure | range |")
    out.append("|---|---|")
    present = {line["workload"] for line in lines}
    for label, workload, path, unit in FIGURES:
        if workload in OPTIONAL and workload not in present:
            continue
        out.append(f"| {label} | {span([get(lines, r, workload, *path) for r in runs], unit)} |")
    out.append("\n## Goals (each run's ratio or figure; met only if met in every run)\n")
    out.append("| goal | per run | met? |")
    out.append("|---|---|---|")
    for goal, values, test, unit in goals(lines, runs):
        shown = ", ".join(fmt(v) + unit if v is not None else "n/a" for v in values)
        known = [v for v in values if v is not None]
        met = "n/a" if not known else ("met" if all(test(v) for v in known) else "missed")
        out.append(f"| {goal} | {shown} | {met} |")
    out.append("\n## Against raw libzmq between two contexts (each end its own I/O thread, "
               "as between two processes; context, not goals)\n")
    out.append("| ratio | per run |")
    out.append("|---|---|")
    for what, values in apart(lines, runs):
        shown = ", ".join(fmt(v) + "×" if v is not None else "n/a" for v in values)
        out.append(f"| {what} | {shown} |")
    out.append("\n## Fan-out comparison (median of the runs; 10 members, 100-byte messages)\n")
    out.append("| system | stores? | deliveries/s | latency p50 µs | p99 µs | p99.9 µs "
               "| rtt p50 µs |")
    out.append("|---|---|---|---|---|---|---|")
    for name, stores, fan, lat, rtt in systems(lines, runs):
        out.append(f"| {name} | {stores} | {fmt(fan[0])} | {fmt(lat[0])} | {fmt(lat[1])} "
                   f"| {fmt(lat[2])} | {fmt(rtt)} |")
    return "\n".join(out) + "\n"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def systems(lines, runs):
    """(name, stores, (fanout median, min, max), (p50, p99, p999 medians), rtt p50 median)."""
    table = [
        ("zms", "SQLite, every message", "fanout", (), "latency", (), "rtt", ()),
        ("NATS core", "no", "nats-core", ("fanout",), "nats-core", ("latency",), "nats-core",
         ("rtt",)),
        ("NATS JetStream", "file, every message", "nats-jetstream", ("fanout",),
         "nats-jetstream", ("latency",), "nats-jetstream", ("rtt",)),
        ("raw libzmq", "no", "raw", ("fanout",), "raw", ("latency",), "raw", ("rtt",)),
    ]
    rows = []
    for name, stores, fw, fp, lw, lp, rw, rp in table:
        fan = [get(lines, r, fw, *fp, "deliveries_per_s") for r in runs]
        fan = [v for v in fan if v is not None]
        lat = tuple(median([get(lines, r, lw, *lp, k) for r in runs])
                    for k in ("p50_us", "p99_us", "p999_us"))
        rtt = median([get(lines, r, rw, *rp, "p50_us") for r in runs])
        rows.append((name, stores, (median(fan), min(fan, default=None), max(fan, default=None)),
                     lat, rtt))
    return rows


def nice_step(raw):
    """The smallest of 1, 2, 2.5, 5 × 10^k at least `raw`, for round axis ticks."""
    if raw <= 0:
        return 1
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= raw)


def svg(lines, runs, info):
    """Two panels: fanout deliveries/s (bars, min–max whiskers), latency percentiles (log)."""
    rows = systems(lines, runs)
    colors = ["#d9480f", "#1971c2", "#5f3dc4", "#2b8a3e"]
    w, h = 980, 420
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">'
             f'zms vs NATS vs raw libzmq: 1 sender, 10 members, 100-byte messages</text>',
             f'<text x="{w / 2}" y="40" text-anchor="middle" fill="#555">{info["nproc"]} cores '
             f'({info["cpu"]}), {len(runs)} run(s), zms {info["commit"]}, '
             f'{info["nats_server"]}; all on 127.0.0.1</text>']
    # Panel 1: throughput.
    x0, y0, pw, ph = 70, 70, 380, 290
    step = nice_step(max((r[2][2] or 0) for r in rows) * 1.1 / 5)
    top = step * 5
    parts.append(f'<text x="{x0 + pw / 2}" y="{y0 - 8}" text-anchor="middle" '
                 f'font-weight="bold">fan-out deliveries per second (higher is better)</text>')
    for i in range(6):
        v = top * i / 5
        y = y0 + ph - ph * i / 5
        parts.append(f'<line x1="{x0}" y1="{y}" x2="{x0 + pw}" y2="{y}" stroke="#eee"/>')
        parts.append(f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end">{fmt(v)}</text>')
    bw = pw / len(rows)
    for i, (name, _, (med, lo, hi), _, _) in enumerate(rows):
        if med is None:
            continue
        bx = x0 + i * bw + bw * 0.15
        by = y0 + ph - ph * med / top
        parts.append(f'<rect x="{bx:.1f}" y="{by:.1f}" width="{bw * 0.7:.1f}" '
                     f'height="{y0 + ph - by:.1f}" fill="{colors[i]}"/>')
        cx = bx + bw * 0.35
        ylo, yhi = y0 + ph - ph * lo / top, y0 + ph - ph * hi / top
        parts.append(f'<line x1="{cx:.1f}" y1="{ylo:.1f}" x2="{cx:.1f}" y2="{yhi:.1f}" '
                     f'stroke="black"/>')
        parts.append(f'<text x="{cx:.1f}" y="{by - 6:.1f}" text-anchor="middle">{fmt(med)}</text>')
        parts.append(f'<text x="{cx:.1f}" y="{y0 + ph + 16}" text-anchor="middle">{name}</text>')
    parts.append(f'<line x1="{x0}" y1="{y0 + ph}" x2="{x0 + pw}" y2="{y0 + ph}" stroke="black"/>')
    # Panel 2: latency percentiles, log scale.
    x1 = 560
    parts.append(f'<text x="{x1 + pw / 2}" y="{y0 - 8}" text-anchor="middle" '
                 f'font-weight="bold">latency at 20,000 msgs/s, µs (log; lower is better)</text>')
    values = [v for r in rows for v in r[3] if v]
    lo_e = math.floor(math.log10(min(values))) if values else 1
    hi_e = math.ceil(math.log10(max(values))) if values else 4

    def ly(v):
        return y0 + ph - ph * (math.log10(v) - lo_e) / max(hi_e - lo_e, 1)

    for e in range(lo_e, hi_e + 1):
        y = ly(10 ** e)
        parts.append(f'<line x1="{x1}" y1="{y:.1f}" x2="{x1 + pw}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{x1 - 6}" y="{y + 4:.1f}" text-anchor="end">{10 ** e:g}</text>')
    gw = pw / 3
    for k, label in enumerate(("p50", "p99", "p99.9")):
        for i, row in enumerate(rows):
            v = row[3][k]
            if not v:
                continue
            bx = x1 + k * gw + gw * 0.1 + i * gw * 0.8 / len(rows)
            by = ly(v)
            parts.append(f'<rect x="{bx:.1f}" y="{by:.1f}" width="{gw * 0.8 / len(rows) - 2:.1f}" '
                         f'height="{y0 + ph - by:.1f}" fill="{colors[i]}"/>')
        parts.append(f'<text x="{x1 + k * gw + gw / 2:.1f}" y="{y0 + ph + 16}" '
                     f'text-anchor="middle">{label}</text>')
    parts.append(f'<line x1="{x1}" y1="{y0 + ph}" x2="{x1 + pw}" y2="{y0 + ph}" stroke="black"/>')
    for i, row in enumerate(rows):
        lx = x0 + i * 150
        parts.append(f'<rect x="{lx}" y="{h - 26}" width="12" height="12" fill="{colors[i]}"/>')
        parts.append(f'<text x="{lx + 16}" y="{h - 16}">{row[0]}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def resummarize(args):
    """Writes summary.md and comparison.svg from earlier runs' lines, numbering runs anew."""
    lines, run = [], 0
    for source in args.sources:
        by_run = {}
        for text in Path(source).read_text().splitlines():
            if text.strip():
                line = json.loads(text)
                by_run.setdefault(line["run"], []).append(line)
        for old in sorted(by_run):
            run += 1
            for line in by_run[old]:
                line["run"] = run
                lines.append(line)
    runs = list(range(1, run + 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine(args.commit)
    (out / "results.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    (out / "machine.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / "summary.md").write_text(summary(lines, runs, info, args))
    (out / "comparison.svg").write_text(svg(lines, runs, info))
    print((out / "summary.md").read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bench-bin", default=str(default_bench_bin()),
                        help="the zms-bench binary, with zms beside it (default: %(default)s)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--quick", action="store_true", help="tiny counts, to check the script")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per zms-bench call")
    parser.add_argument("--commit", help="the commit --bench-bin was built from (default: HEAD)")
    parser.add_argument("--from", dest="sources", nargs="+", metavar="JSONL",
                        help="summarize earlier results.jsonl files (runs renumbered) instead of "
                             "running anything")
    parser.add_argument("extra", nargs="*", help="more flags for every zms-bench call")
    args = parser.parse_args()
    if args.sources:
        return resummarize(args)
    bench_bin = Path(args.bench_bin)
    if not bench_bin.exists():
        sys.exit(f"{bench_bin} not found: cargo build --release --workspace")
    named = os.environ.get("ZMS_BIN") or any(a.startswith("--zms") for a in args.extra)
    if not named and not (bench_bin.parent / "zms").exists():
        sys.exit(f"no zms beside {bench_bin} (zms-bench starts its servers from it): "
                 f"cargo build --release --workspace, or name one with ZMS_BIN")
    if shutil.which("nats-server") is None:
        sys.exit("nats-server not found: apt-get update && apt-get install -y nats-server")
    redis = shutil.which("redis-server") is not None
    if not redis:
        print("redis-server not found (apt-get install -y redis-server): skipping the Redis rows",
              file=sys.stderr, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine(args.commit)
    lines = []
    runs = list(range(1, args.runs + 1))
    for run in runs:
        print(f"== run {run} of {args.runs}", file=sys.stderr, flush=True)
        before = cpu_ticks()
        lines += one_run(bench_bin, run, args.extra, args.quick, args.timeout, redis)
        # How busy the host was: on a shared VM, the time stolen for other guests is the noise.
        lines.append({"workload": "machine", "run": run,
                      "steal_pct": stolen_pct(before, cpu_ticks())})
        (out / "results.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    (out / "machine.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / "summary.md").write_text(summary(lines, runs, info, args))
    (out / "comparison.svg").write_text(svg(lines, runs, info))
    print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()

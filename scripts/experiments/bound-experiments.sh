#!/usr/bin/env bash
# What bounds zms: A/B runs of a diagnostic build whose group server can skip parts of its work.
#
# NOT for production: bound-experiments.patch (beside this script) makes src/group/store.rs read
# ZMS_EXP and, per flag, drop the two secondary indexes and the dedupe lookup (noidx), skip
# SQLite entirely (nostore), or turn off WAL auto-checkpoints (nockpt); it also carries the
# HISTORY "since" query fix. Apply it to a scratch worktree, never to main:
#
#   git worktree add --detach /tmp/zms-exp HEAD && cd /tmp/zms-exp
#   git apply /path/to/scripts/experiments/bound-experiments.patch
#   cargo build --release && ZMS=target/release/zms bash /path/to/bound-experiments.sh
#
# Rounds interleave the variants so the machine's noise spreads over all of them. The group
# server is a child of `zms bench` and inherits ZMS_EXP.
set -euo pipefail
ZMS=${ZMS:-target/release/zms}
for round in 1 2 3; do
  for variant in base noidx nostore nockpt; do
    for workload in fanout ingest rtt latency; do
      echo "$round $variant $workload $(ZMS_EXP=$variant "$ZMS" bench "$workload" 2>/dev/null)"
    done
  done
done

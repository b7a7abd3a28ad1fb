#!/usr/bin/env bash
# Streamer benchmarks, in one run on this machine:
#
# 1. Drain: loadgen fills the shard streams with N events of its mix (24 h of
#    back-dated traffic over S sites, through ingest's batch endpoint) while
#    no streamer runs; then the streamer(s) start and the time until every
#    entry is applied and acknowledged gives events/s end to end into the
#    key-map. Redis CPU time per event is read from INFO before and after.
#    `tally verify` then checks the key-map against the streams.
# 2. Beside it, redis-benchmark XADDs a record of the same shape with
#    pipelining 64, the reference the issue names.
# 3. Key-map memory: used_memory after the drain minus before (the streams
#    are already in), per million events and per site-day.
# 4. Freshness: with ingest, the streamer and the gateway running and
#    loadgen sending a steady RATE events/s, bench/freshness.py posts probe
#    page views and measures from ingest's 202 until the gateway's
#    pages_minute shows them (the gateway's 1-second result cache is off for
#    this, so the figure is the pipeline's own).
#
# usage: bench/streamer.sh [events=500000] [sites=10] [streamers=1] [rate=20000] [probes=200] [backfill_hours=24]
#
# backfill_hours=24 spreads the prefill's event times over a day in random
# order (loadgen's sessions start at random times), the hardest case: few
# events of a batch share a bucket. 0 stamps them as they are sent, as a
# stream that filled up while the streamer was down looks.
# REDIS_EXTRA_ARGS adds redis-server options (e.g. "--hll-sparse-max-bytes 600").
# TALLY_BIN=path measures that binary instead of building this checkout.
# INSTRUCTIONS=1 runs redis-server and the streamer under valgrind's callgrind
# and reports the instructions each executes per drained event (repeatable to
# about 1 % on a noisy host, where wall-clock figures are not); it stops after
# the drain's verify, since times under valgrind mean nothing. CALLGRIND_DIR=dir
# keeps the dumps there, for callgrind_annotate.
# PROFILE=dir records `perf` profiles of redis-server (frame pointers) and of
# the streamer(s) (DWARF unwinding) over the drain, as dir/redis.perf and
# dir/streamer.perf, for `perf report -i`. Debian's redis-server is stripped
# and has no frame pointers; put a build with symbols first in PATH, e.g.
# `apt-get source redis` (with deb-src enabled), then in its tree
# `make REDIS_CFLAGS=-fno-omit-frame-pointer` and PATH=<tree>/src:$PATH.
# needs: redis-server, redis-benchmark, python3 with psycopg2 (and valgrind
# for INSTRUCTIONS=1, perf for PROFILE)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${1:-500000}"; SITES="${2:-10}"; STREAMERS="${3:-1}"; RATE="${4:-20000}"; PROBES="${5:-200}"; BACKFILL="${6:-24}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tally-target}"
if [ -n "${PROFILE:-}" ]; then command -v perf >/dev/null || { echo "missing perf (Debian's linux-perf)" >&2; exit 1; }; fi
for b in redis-server redis-cli redis-benchmark python3; do command -v "$b" >/dev/null || { echo "missing $b" >&2; exit 1; }; done
python3 -c 'import psycopg2' || { echo "missing psycopg2 (pip install -r tests/clients/requirements.txt)" >&2; exit 1; }
if [ -z "${TALLY_BIN:-}" ]; then cargo build --release --quiet --bin tally; fi
TALLY="${TALLY_BIN:-$CARGO_TARGET_DIR/release/tally}"
COUNT="${INSTRUCTIONS:-0}"
WORK="$(mktemp -d)"
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(free_port); IPORT=$(free_port); GPORT=$(free_port); HPORT=$(free_port)

REDIS_ARGS=(--port "$RPORT" --bind 127.0.0.1 --dir "$WORK" --appendonly yes --appendfsync everysec --save "" --logfile "$WORK/redis.log")
# shellcheck disable=SC2206 # REDIS_EXTRA_ARGS: extra redis-server options, split on spaces
REDIS_ARGS+=(${REDIS_EXTRA_ARGS:-})
if [ "$COUNT" = 1 ]; then
  command -v valgrind >/dev/null || { echo "missing valgrind" >&2; exit 1; }
  # Counting starts at the drain (callgrind_control -i on), not at the prefill.
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/redis.cg.%p" redis-server "${REDIS_ARGS[@]}" 2>/dev/null &
  RPID=$!
else
  redis-server "${REDIS_ARGS[@]}" --daemonize yes
fi
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.05; done
export REDIS_URL="redis://127.0.0.1:$RPORT" TALLY_LOG=warn
R() { redis-cli -p "$RPORT" "$@"; }
info() { R info "$1" | tr -d '\r' | sed -n "s/^$2:\(.*\)/\1/p"; }
cpu() { python3 -c "print($(info cpu used_cpu_user) + $(info cpu used_cpu_sys))"; }
now() { python3 -c 'import time; print(time.monotonic())'; }
# Events in the shard streams (an entry holds one or several).
stored() { R --eval bench/count_events.lua $SHARD_STREAMS , ; }
# Applied and acknowledged everywhere: lag 0 and nothing pending on all 16
# shards (one redis-cli per poll: the polling must not compete for the cores).
SHARD_STREAMS=$(for s in $(seq 0 15); do printf 'tally:{s%02d}:events ' "$s"; done)
drained() { [ "$(R --eval bench/drained.lua $SHARD_STREAMS , tally:agg:v1)" = 1 ]; }
# The share of the events in the fullest shard: one site's events all go to
# one shard, so this shard's own rate bounds the drain's.
largest_shard() {
  for s in $SHARD_STREAMS; do R --eval bench/count_events.lua "$s" , ; done | sort -n | tail -1
}

"$TALLY" ingest --ingest-addr "127.0.0.1:$IPORT" --open-collection --trust-forwarded-for \
  --max-batch-events 500 --max-event-age-hours 48 --queue 65536 &
until curl -s -o /dev/null "http://127.0.0.1:$IPORT/t.js"; do sleep 0.05; done

echo "== prefill: $EVENTS loadgen events over $SITES sites (back-dated over $BACKFILL h), no streamer running"
"$TALLY" loadgen --url "http://127.0.0.1:$IPORT" --total "$EVENTS" --rate 10000000 --sites "$SITES" \
  --backfill-hours "$BACKFILL" --batch 100 --concurrency 8 --progress false --seed 7
ENTRIES=$(stored)
echo "events in the streams: $ENTRIES in $(for s in $(seq 0 15); do R xlen "tally:{s$(printf %02d "$s")}:events"; done | paste -sd+ | bc) entries"
LARGEST=$(largest_shard)
echo "largest shard: $LARGEST events ($(python3 -c "print(round(100 * $LARGEST / max($ENTRIES, 1), 1))") %)"
SBYTES=0; for s in $(seq 0 15); do b=$(R memory usage "tally:{s$(printf %02d "$s")}:events" samples 0); SBYTES=$((SBYTES + ${b:-0})); done
echo "STREAMS bytes=$SBYTES per_event=$(python3 -c "print(round($SBYTES / max($ENTRIES, 1), 1))") (the loadgen mix, as stored)"
MEM0=$(info memory used_memory); CPU0=$(cpu)
AOF0=$(info persistence aof_current_size); REWRITES0=$(info persistence aof_rewrites)
R config resetstat >/dev/null

echo "== drain with $STREAMERS streamer process(es)"
# Total instructions in a callgrind dump.
cg_total() { sed -n 's/^\(totals\|summary\): \([0-9]*\).*/\2/p' "$1" | head -1; }
WRAP=()
if [ "$COUNT" = 1 ]; then
  callgrind_control -i on "$RPID" >/dev/null 2>&1
  WRAP=(valgrind --tool=callgrind --callgrind-out-file="$WORK/streamer.cg.%p")
fi
T0=$(now)
SPIDS=()
for i in $(seq 1 "$STREAMERS"); do "${WRAP[@]}" "$TALLY" streamer --streamer-addr 127.0.0.1:0 --consumer "bench-$i" 2>/dev/null & SPIDS+=($!); done
PERFS=()
if [ -n "${PROFILE:-}" ]; then
  mkdir -p "$PROFILE"
  perf record -q -F 1999 -g -p "$(info server process_id)" -o "$PROFILE/redis.perf" >/dev/null 2>&1 & PERFS+=($!)
  perf record -q -F 999 --call-graph dwarf,16384 -p "$(IFS=,; echo "${SPIDS[*]}")" -o "$PROFILE/streamer.perf" >/dev/null 2>&1 & PERFS+=($!)
fi
until drained; do sleep 0.05; done
T1=$(now); CPU1=$(cpu); MEM1=$(info memory used_memory)
# Stopped after the drain's clock: perf writes its files as it stops.
if [ "${#PERFS[@]}" -gt 0 ]; then kill -INT "${PERFS[@]}"; wait "${PERFS[@]}" 2>/dev/null || true; fi
AOF1=$(info persistence aof_current_size); REWRITES1=$(info persistence aof_rewrites)
if [ "$COUNT" = 1 ]; then
  callgrind_control -d "$RPID" >/dev/null 2>&1
  # Redis's own dumps only: an AOF rewrite's forked child writes one of
  # its own (redis.cg.<child pid>), whose work is not the drain's.
  RINS=$(for f in "$WORK"/redis.cg."$RPID" "$WORK"/redis.cg."$RPID".*; do if [ -e "$f" ]; then cg_total "$f"; fi; done | paste -sd+ | bc)
  kill -TERM "${SPIDS[@]}"; wait "${SPIDS[@]}" 2>/dev/null || true
  SINS=$(for f in "$WORK"/streamer.cg.*; do cg_total "$f"; done | paste -sd+ | bc)
  if [ -n "${CALLGRIND_DIR:-}" ]; then mkdir -p "$CALLGRIND_DIR" && cp "$WORK"/*.cg.* "$CALLGRIND_DIR"/; fi
  echo "INSTRUCTIONS per event: redis=$((RINS / ENTRIES)) streamer=$((SINS / ENTRIES)) (callgrind, $ENTRIES events; the streamer's include its start and stop)"
  "$TALLY" verify | tail -1
  exit 0
fi
# CPU seconds of the streamer processes (utime + stime, clock ticks).
SCPU=$(for p in "${SPIDS[@]}"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | python3 -c "import os, sys; print(sum(float(l) for l in sys.stdin) / os.sysconf('SC_CLK_TCK'))")
echo "STREAMER cpu_seconds=$SCPU us_per_event=$(python3 -c "print(round($SCPU / $ENTRIES * 1e6, 2))")"
python3 - "$ENTRIES" "$T0" "$T1" "$CPU0" "$CPU1" "$MEM0" "$MEM1" "$SITES" <<'PY'
import sys
n, t0, t1, c0, c1, m0, m1, sites = (float(x) for x in sys.argv[1:])
secs = t1 - t0
print(f"DRAIN events={n:.0f} seconds={secs:.2f} events_per_s={n / secs:,.0f} redis_cpu_us_per_event={(c1 - c0) / n * 1e6:.2f}")
keymap = m1 - m0
# 24 h of back-dated traffic: the events of each site fall on up to two UTC
# days; a site-day here is one site's 24 hours.
print(f"KEYMAP bytes={keymap:,.0f} per_million_events={keymap / n * 1e6 / 2**20:,.1f}MiB "
      f"per_site_day={keymap / sites / 2**20:,.2f}MiB (at {n / sites:,.0f} events per site-day)")
PY
# What the drain appended to the AOF (the commands Redis propagates: an
# apply script's writes, the sketch adds), unless a rewrite started over.
if [ "$REWRITES1" = "$REWRITES0" ]; then
  echo "AOF bytes_per_event=$(python3 -c "print(round(($AOF1 - $AOF0) / $ENTRIES, 1))") rewrites=0"
else
  echo "AOF rewrites=$((REWRITES1 - REWRITES0)) (the growth per event is not known)"
fi
echo "Redis commands during the drain (calls, µs per call, share of time):"
R info commandstats | tr -d '\r' | python3 -c '
import re, sys
rows = []
for line in sys.stdin:
    m = re.match(r"cmdstat_(\w+(?:\|\w+)?):calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)", line)
    if m: rows.append((int(m[3]), m[1], int(m[2]), float(m[4])))
total = sum(r[0] for r in rows) or 1
for usec, name, calls, per in sorted(rows, reverse=True)[:12]:
    print(f"  {name:<14} {calls:>10} {per:>8.2f} µs {100 * usec / total:5.1f} %")
'
echo "== verify (recompute from the streams, diff against the key-map)"
"$TALLY" verify | tail -1

echo "== redis-benchmark XADD, pipeline 64, same record shape"
redis-benchmark -p "$RPORT" -P 64 -c 16 -n 2000000 -q XADD bench:xadd '*' \
  t -2 v -4011563371455215425 e $'shop.example\x1e\x1e/products/item-3?utm_source=newsletter\x1ehttps://www.google.com/\x1eChrome\x1fWindows 10\x1fdesktop\x1e\x1e\x1e\x1e' i 4815162342 | tr '\r' '\n' | grep -E 'requests per second' | tail -1
R del bench:xadd >/dev/null

echo "== freshness at $RATE events/s"
"$TALLY" gateway --gateway-addr "127.0.0.1:$GPORT" --gateway-http-addr "127.0.0.1:$HPORT" --result-cache-ms 0 &
until python3 -c "import psycopg2; psycopg2.connect(host='127.0.0.1', port=$GPORT, user='tally', dbname='tally')" 2>/dev/null; do sleep 0.1; done
SECS=$(( PROBES / 10 + 10 ))
A0=$(stored); L0=$(now)
"$TALLY" loadgen --url "http://127.0.0.1:$IPORT" --total $(( RATE * SECS )) --rate "$RATE" --sites "$SITES" \
  --batch 50 --concurrency 8 --progress false --seed 11 > "$WORK/load.txt" &
LOAD=$!
sleep 3
python3 bench/freshness.py "http://127.0.0.1:$IPORT" "$GPORT" probe.example "$PROBES" 0.05 | sed 's/^/FRESHNESS /'
wait "$LOAD"
L1=$(now); A1=$(stored)
echo "LOAD $(cat "$WORK/load.txt"); achieved $(python3 -c "print(f'{($A1 - $A0) / ($L1 - $L0):,.0f}')") events/s into the streams"

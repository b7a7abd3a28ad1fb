#!/usr/bin/env bash
# Ingest throughput beside nginx, in one run on this machine, then the batch
# endpoint beside redis-benchmark's pipelined XADD.
#
# Both servers get the same wrk load (connections, threads, duration) with a
# realistic tracker payload on POST /api/event: nginx answers 204 from
# memory; Tally's ingest validates, hashes the visitor id and XADDs every
# event to Redis (AOF on, appendfsync everysec) before answering 202. After
# the run, the events in the streams are counted and must equal the number
# of 2xx answers wrk saw. The batch run posts 100 events per request to
# POST /api/events (each with its own visitor address, as a server forwarding
# traffic sends them), beside `redis-benchmark -P 64` XADDing a record of the
# same shape to a bare stream. For both Tally runs it also prints the CPU
# time ingest and Redis spent per stored event (from /proc, over the wrk
# run): on a shared two-core machine the rates move with whatever else runs,
# the CPU per event much less. The same is printed for nginx and for wrk
# itself, which shares the two cores: what wrk and nginx spend per request
# bounds the rate any server could reach here.
#
# usage: bench/ingest.sh [duration_s=10] [connections=64] [threads=2] [rounds=3]
# rounds: nginx and ingest take turns this many times, each round one wrk run
# of each; a ratio is printed per round, then their median. On this shared
# two-core host one binary's ratio moved between 0.36 and 0.53 from run to
# run, so a single pair of runs says little; the rounds show the spread.
# TALLY_BIN=path measures that binary instead of building this checkout.
# INSTRUCTIONS=1 runs ingest under valgrind's callgrind instead and reports
# the instructions it executes per stored single event, then per stored
# batch event (user space only; repeatable where wall-clock figures are not),
# then stops. CALLGRIND_DIR=dir keeps the dumps there (.1 single, .2 batch),
# for callgrind_annotate.
# needs: wrk, nginx, redis-server (apt-get install wrk nginx-light redis-server)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"; CONNS="${2:-64}"; THREADS="${3:-2}"; ROUNDS="${4:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tally-target}"
for b in wrk nginx redis-server redis-cli; do command -v "$b" >/dev/null || { echo "missing $b" >&2; exit 1; }; done
# TALLY_BIN: a prebuilt binary to measure instead (to compare two builds).
if [ -z "${TALLY_BIN:-}" ]; then cargo build --release --quiet --bin tally; fi
TALLY="${TALLY_BIN:-$CARGO_TARGET_DIR/release/tally}"
WORK="$(mktemp -d)"; trap 'kill $(jobs -p) 2>/dev/null || true; nginx -p "$WORK/nginx" -c nginx.conf -s stop 2>/dev/null || true; redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(free_port); IPORT=$(free_port); NPORT=$(free_port); SPORT=$(free_port)

redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$WORK" --appendonly yes --appendfsync everysec --save "" --daemonize yes --logfile "$WORK/redis.log"
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.05; done
export REDIS_URL="redis://127.0.0.1:$RPORT" TALLY_LOG=warn
"$TALLY" sites add shop.example >/dev/null
COUNT="${INSTRUCTIONS:-0}"
WRAP=()
if [ "$COUNT" = 1 ]; then
  command -v valgrind >/dev/null || { echo "missing valgrind" >&2; exit 1; }
  # Counting starts with the wrk run (callgrind_control -i on), not at start-up.
  WRAP=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/ingest.cg.%p")
fi
"${WRAP[@]}" "$TALLY" ingest --ingest-addr "127.0.0.1:$IPORT" 2>/dev/null &
INGEST_PID=$!
REDIS_PID=$(redis-cli -p "$RPORT" info server | tr -d '\r' | sed -n 's/^process_id://p')
# CPU seconds (user + system) of a process so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat"; }
# "ingest_cpu_us_per_event=.. redis_cpu_us_per_event=.." between two samples.
cpu_per_event() {
  python3 -c "import sys; i0,i1,r0,r1,n=map(float,sys.argv[1:]); n=max(n,1); print(f'ingest_cpu_us_per_event={(i1-i0)/n*1e6:.2f} redis_cpu_us_per_event={(r1-r0)/n*1e6:.2f}')" "$@"
}
mkdir -p "$WORK/nginx/logs"
cat > "$WORK/nginx/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_buffer_size 16k;
  server {
    listen 127.0.0.1:$NPORT;
    location = /api/event { return 204; }
  }
}
NGINX
nginx -p "$WORK/nginx" -c nginx.conf
# One reporting function for every wrk run: a RESULT line the script parses.
cat > "$WORK/report.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f requests=%d non2xx=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"n":"pageview","u":"https://shop.example/products/item-3?utm_source=newsletter","d":"shop.example","r":"https://www.google.com/","ret":1}'
wrk.headers["Content-Type"] = "text/plain"
wrk.headers["User-Agent"] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
LUA
cat "$WORK/report.lua" >> "$WORK/post.lua"
# The batch endpoint's body: 100 events per request.
python3 - "$WORK/batch.lua" <<'PY'
import json, sys
events = [{"n": "pageview", "u": f"https://shop.example/products/item-{i % 17}?utm_source=newsletter",
           "d": "shop.example", "r": "https://www.google.com/", "ip": f"10.0.{i // 250}.{i % 250 + 1}"} for i in range(100)]
body = json.dumps({"events": events}).replace("\\", "\\\\").replace("'", "\\'")
open(sys.argv[1], "w").write(f"""wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
""")
PY
cat "$WORK/report.lua" >> "$WORK/batch.lua"
for p in "$IPORT" "$NPORT"; do until curl -s -o /dev/null "http://127.0.0.1:$p/"; do sleep 0.05; done; done

# One wrk run; wrk's own CPU seconds (user + system) go to $WORK/wrk.cpu.
run() {
  local TIMEFORMAT='%U %S'
  { time wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/post.lua" "$1" > "$WORK/wrk.out"; } 2> "$WORK/wrk.time"
  awk '{ printf "%.3f", $1 + $2 }' "$WORK/wrk.time" > "$WORK/wrk.cpu"
  grep '^RESULT' "$WORK/wrk.out"
}
# "name_cpu_us_per_request=.." from CPU seconds and a request count.
per_request() { python3 -c "import sys; print(f'{sys.argv[1]}_cpu_us_per_request={float(sys.argv[2]) / max(float(sys.argv[3]), 1) * 1e6:.2f}')" "$@"; }
field() { sed -E "s/.*$2=([0-9.]+).*/\1/" <<<"$1"; }
# Events in the shard streams (an entry holds one or several).
count_stored() { redis-cli -p "$RPORT" --eval bench/count_events.lua $(for s in $(seq 0 15); do printf 'tally:{s%02d}:events ' "$s"; done) , ; }

if [ "$COUNT" = 1 ]; then
  callgrind_control -i on "$INGEST_PID" >/dev/null 2>&1
  echo "tally ingest under callgrind (202 after XADD):"
  T=$(run "http://127.0.0.1:$IPORT/api/event"); echo "  $T"
  callgrind_control -d "$INGEST_PID" >/dev/null 2>&1
  stored=$(count_stored)
  cg_total() { sed -n 's/^\(totals\|summary\): \([0-9]*\).*/\2/p' "$1" | head -1; }
  INS=$(cg_total "$WORK/ingest.cg.$INGEST_PID.1")
  echo "INSTRUCTIONS per event: ingest=$((INS / (stored > 0 ? stored : 1))) (callgrind, user space, $stored events)"
  # The batch endpoint, counted apart (the dump above reset the counts).
  echo "tally ingest batch under callgrind (100 events per request, 16 connections):"
  B=$(wrk -t"$THREADS" -c16 -d"${DURATION}s" -s "$WORK/batch.lua" "http://127.0.0.1:$IPORT/api/events" | grep '^RESULT'); echo "  $B"
  callgrind_control -d "$INGEST_PID" >/dev/null 2>&1
  batch=$(( $(count_stored) - stored ))
  INS=$(cg_total "$WORK/ingest.cg.$INGEST_PID.2")
  echo "INSTRUCTIONS per batch event: ingest=$((INS / (batch > 0 ? batch : 1))) (callgrind, user space, $batch events)"
  if [ -n "${CALLGRIND_DIR:-}" ]; then mkdir -p "$CALLGRIND_DIR" && cp "$WORK"/ingest.cg.* "$CALLGRIND_DIR"/; fi
  exit 0
fi

# CPU seconds of nginx's master and workers so far.
nginx_cpu_s() {
  local master; master=$(cat "$WORK/nginx/nginx.pid")
  for p in "$master" $(pgrep -P "$master"); do cpu_s "$p"; echo; done | paste -sd+ | bc
}
sum() { paste -sd+ | bc; }
ratios=(); ok=0; wrk_cpu=0; ingest_cpu=0; redis_cpu=0; ingest_requests=0
# Events stored so far: counted once per round (a scan of the streams), the
# end of one round being the start of the next.
stored=$(count_stored)
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS"
  echo " nginx (204):"
  n0=$(nginx_cpu_s)
  N=$(run "http://127.0.0.1:$NPORT/api/event"); echo "  $N"
  n1=$(nginx_cpu_s)
  echo "  CPU $(per_request nginx "$(bc <<<"$n1 - $n0")" "$(field "$N" requests)") $(per_request wrk "$(cat "$WORK/wrk.cpu")" "$(field "$N" requests)")"
  echo " tally ingest (202 after XADD):"
  s0=$stored; i0=$(cpu_s "$INGEST_PID"); r0=$(cpu_s "$REDIS_PID")
  T=$(run "http://127.0.0.1:$IPORT/api/event"); echo "  $T"
  i1=$(cpu_s "$INGEST_PID"); r1=$(cpu_s "$REDIS_PID"); stored=$(count_stored)
  echo "  CPU $(cpu_per_event "$i0" "$i1" "$r0" "$r1" "$((stored - s0))") $(per_request wrk "$(cat "$WORK/wrk.cpu")" "$(field "$T" requests)")"
  ratio=$(python3 -c "print(round($(field "$T" rps)/$(field "$N" rps), 3))")
  echo "  ratio ingest/nginx: $ratio"
  ratios+=("$ratio")
  ok=$(( ok + $(field "$T" requests) - $(field "$T" non2xx) ))
  ingest_requests=$(( ingest_requests + $(field "$T" requests) ))
  wrk_cpu=$(sum <<<"$wrk_cpu"$'\n'"$(cat "$WORK/wrk.cpu")")
  ingest_cpu=$(sum <<<"$ingest_cpu"$'\n'"$i1 - $i0")
  redis_cpu=$(sum <<<"$redis_cpu"$'\n'"$r1 - $r0")
done
echo "events in streams: $stored, 2xx answers: $ok (all rounds)"
echo "CPU over all ingest rounds: $(cpu_per_event 0 "$ingest_cpu" 0 "$redis_cpu" "$stored") $(per_request wrk "$wrk_cpu" "$ingest_requests")"
echo "ratios ingest/nginx: ${ratios[*]}"
echo "ratio ingest/nginx (median of $ROUNDS): $(python3 -c 'import statistics, sys; print(round(statistics.median(map(float, sys.argv[1:])), 3))' "${ratios[@]}")"
mem=$(redis-cli -p "$RPORT" memory usage "tally:{s$(printf %02d "$(python3 -c 'h=0x811c9dc5
for b in b"shop.example": h=((h^b)*0x01000193)&0xffffffff
print(h%16)')")}:events" samples 0)
echo "stream bytes per event (this payload): $(python3 -c "print(round($mem/max($stored,1),1))")"
# wrk stops counting with up to one request per connection still in flight,
# which the server may have completed: stored is between ok and ok + conns
# per round.
[ "$stored" -ge "$ok" ] || { echo "LOST EVENTS: $stored stored < $ok acknowledged" >&2; exit 1; }
[ "$stored" -le $((ok + CONNS * ROUNDS)) ] || { echo "UNEXPECTED: $stored stored > $ok acknowledged + $CONNS per round" >&2; exit 1; }

# Batch endpoint: 100 events per request (the body is written above).
before=$stored
i0=$(cpu_s "$INGEST_PID"); r0=$(cpu_s "$REDIS_PID")
BCONNS=16
echo "tally ingest batch (100 events per request, $BCONNS connections):"
B=$(wrk -t"$THREADS" -c"$BCONNS" -d"${DURATION}s" --latency -s "$WORK/batch.lua" "http://127.0.0.1:$IPORT/api/events" | grep '^RESULT'); echo "  $B"
i1=$(cpu_s "$INGEST_PID"); r1=$(cpu_s "$REDIS_PID")
after=$(count_stored)
echo "  CPU $(cpu_per_event "$i0" "$i1" "$r0" "$r1" "$((after - before))")"
okb=$(( $(field "$B" requests) - $(field "$B" non2xx) ))
echo "  events/s: $(( $(field "$B" rps | cut -d. -f1) * 100 )), batch events stored: $((after - before)), in 2xx answers: $((okb * 100))"
[ "$((after - before))" -ge "$((okb * 100))" ] || { echo "LOST BATCH EVENTS" >&2; exit 1; }
echo "redis-benchmark XADD, pipeline 64, same record shape:"
redis-benchmark -p "$RPORT" -P 64 -c "$BCONNS" -n 2000000 -q XADD bench:xadd '*' \
  t -2 v -4011563371455215425 e $'shop.example\x1e\x1e/products/item-3?utm_source=newsletter\x1ehttps://www.google.com/\x1eChrome\x1fWindows 10\x1fdesktop\x1e\x1e\x1e\x1e' i 4815162342 | tr '\r' '\n' | grep -E 'requests per second' | tail -1

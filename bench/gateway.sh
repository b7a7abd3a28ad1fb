#!/usr/bin/env bash
# The gateway beside PostgreSQL, in one run on this machine, with pgbench.
#
# Loads loadgen traffic spread over the last 30 days into a private Redis
# through ingest and the streamer, copies the same aggregates (traffic_hour,
# pages_day) into the PostgreSQL named by $TALLY_BENCH_PG as indexed tables
# (primary key = site, bucket[, path]), then runs the same three queries
# with pgbench (simple protocol, 8 clients) against both:
#   q1  one site's hourly traffic for the last 7 days
#   q2  one site's top 10 pages over 30 days
#   q3  a Grafana time-series panel as Grafana expands it ($__timeGroupAlias,
#       $__timeFilter over 7 days)
# and reports transactions per second, the ratio gateway/PostgreSQL and the
# p99 latency from pgbench's per-transaction logs. The gateway runs twice
# side by side: as configured by default (the 1-second result cache answers
# repeated statements, as dashboard refreshes are) and with the cache off
# (--result-cache-ms 0: every query planned and read from Redis). Finally it opens 100 idle
# connections to the gateway and reports its resident memory.
#
# usage: bench/gateway.sh [duration_s=10] [clients=8] [events=200000]
# needs: pgbench, psql, redis-server, python3 with psycopg2 (tests/clients/requirements.txt)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"; CLIENTS="${2:-8}"; EVENTS="${3:-200000}"
REF="${TALLY_BENCH_PG:-host=127.0.0.1 port=5432 user=postgres dbname=test}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tally-target}"
for b in pgbench psql redis-server redis-cli python3; do command -v "$b" >/dev/null || { echo "missing $b" >&2; exit 1; }; done
# TALLY_BENCH_PROFILE=debug checks the script quickly; figures are release.
PROFILE="${TALLY_BENCH_PROFILE:-release}"
if [ "$PROFILE" = release ]; then cargo build --release --quiet --bin tally; else cargo build --quiet --bin tally; fi
TALLY="$CARGO_TARGET_DIR/$PROFILE/tally"
WORK="$(mktemp -d)"
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; redis-cli -p "$RPORT" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(free_port); IPORT=$(free_port); GPORT=$(free_port); GHTTP=$(free_port); SPORT=$(free_port)
NPORT=$(free_port); NHTTP=$(free_port)

redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$WORK" --save "" --daemonize yes --logfile "$WORK/redis.log"
until redis-cli -p "$RPORT" ping >/dev/null 2>&1; do sleep 0.05; done
export REDIS_URL="redis://127.0.0.1:$RPORT" TALLY_LOG=warn
"$TALLY" ingest --ingest-addr "127.0.0.1:$IPORT" --open-collection --max-event-age-hours 800 >"$WORK/ingest.log" 2>&1 &
"$TALLY" streamer --streamer-addr "127.0.0.1:$SPORT" >"$WORK/streamer.log" 2>&1 &
"$TALLY" gateway --gateway-addr "127.0.0.1:$GPORT" --gateway-http-addr "127.0.0.1:$GHTTP" >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
"$TALLY" gateway --gateway-addr "127.0.0.1:$NPORT" --gateway-http-addr "127.0.0.1:$NHTTP" --result-cache-ms 0 >"$WORK/gateway-nocache.log" 2>&1 &
until curl -sf "http://127.0.0.1:$IPORT/healthz" >/dev/null && curl -sf "http://127.0.0.1:$GHTTP/healthz" >/dev/null \
  && curl -sf "http://127.0.0.1:$NHTTP/healthz" >/dev/null; do sleep 0.1; done

echo "loading $EVENTS loadgen events spread over 30 days ..."
"$TALLY" loadgen --url "http://127.0.0.1:$IPORT" --total "$EVENTS" --rate 50000 --sites 10 --concurrency 32 \
  --backfill-hours 720 --progress false >"$WORK/loadgen.log"
until "$TALLY" status | awk 'NR > 2 && ($2 != 0 || $3 != 0) { busy = 1 } END { exit busy }'; do sleep 0.2; done

GW="host=127.0.0.1 port=$GPORT user=tally dbname=tally"
NC="host=127.0.0.1 port=$NPORT user=tally dbname=tally"
SITE="shop.example"
# The same aggregates, copied into PostgreSQL as indexed tables.
psql "$REF" -q -v ON_ERROR_STOP=1 <<'SQL'
set client_min_messages = warning;
drop schema if exists tally_bench cascade;
create schema tally_bench;
create table tally_bench.traffic_hour (site text, bucket timestamptz, pageviews bigint, visitors bigint, visits bigint, bounces bigint, visit_duration bigint, primary key (site, bucket));
create table tally_bench.pages_day (site text, bucket timestamptz, path text, pageviews bigint, visitors bigint, entries bigint, exits bigint, primary key (site, bucket, path));
SQL
for site in $(psql "$GW" -At -c "select site from sites order by site"); do
  psql "$GW" -At -F, -c "select site, bucket, pageviews, visitors, visits, bounces, visit_duration from traffic_hour where site = '$site' and bucket >= now() - interval '31 days'" >"$WORK/traffic.csv"
  psql "$GW" -At -F, -c "select site, bucket, path, pageviews, visitors, entries, exits from pages_day where site = '$site' and bucket >= now() - interval '31 days'" >"$WORK/pages.csv"
  psql "$REF" -q -c "\\copy tally_bench.traffic_hour from '$WORK/traffic.csv' csv" -c "\\copy tally_bench.pages_day from '$WORK/pages.csv' csv"
done
psql "$REF" -q -c "analyze tally_bench.traffic_hour; analyze tally_bench.pages_day"
ROWS_T=$(psql "$REF" -At -c "select count(*) from tally_bench.traffic_hour")
ROWS_P=$(psql "$REF" -At -c "select count(*) from tally_bench.pages_day")

FROM=$(date -u -d '7 days ago' +%Y-%m-%dT%H:%M:%SZ); TO=$(date -u +%Y-%m-%dT%H:%M:%SZ)
cat >"$WORK/q1.sql" <<SQL
select bucket, pageviews, visits from traffic_hour where site = '$SITE' and bucket >= now() - interval '7 days' order by bucket;
SQL
cat >"$WORK/q2.sql" <<SQL
select path, sum(pageviews) as pageviews from pages_day where site = '$SITE' and bucket >= now() - interval '30 days' group by path order by pageviews desc, path limit 10;
SQL
cat >"$WORK/q3.sql" <<SQL
SELECT floor(extract(epoch from bucket)/3600)*3600 AS "time", sum(pageviews) AS pageviews FROM traffic_hour WHERE bucket BETWEEN '$FROM' AND '$TO' AND site = '$SITE' GROUP BY 1 ORDER BY 1;
SQL

# Both must answer the same rows before they are timed.
for q in q1 q2 q3; do
  psql "$GW" -At -f "$WORK/$q.sql" >"$WORK/$q.gw"
  PGOPTIONS="-c search_path=tally_bench" psql "$REF" -At -f "$WORK/$q.sql" >"$WORK/$q.pg"
  if ! diff -q "$WORK/$q.gw" "$WORK/$q.pg" >/dev/null; then
    echo "$q: the gateway and PostgreSQL disagree:" >&2; diff "$WORK/$q.gw" "$WORK/$q.pg" | head >&2; exit 1
  fi
done

run() { # name conninfo script -> "tps p99_ms"
  local name=$1 conn=$2 script=$3
  mkdir -p "$WORK/log-$name"
  (cd "$WORK/log-$name" && PGOPTIONS="${4:-}" pgbench "$conn" -n -c "$CLIENTS" -j 2 -T "$DURATION" -f "$script" -l --log-prefix=tx 2>/dev/null) >"$WORK/$name.out"
  local tps p99
  tps=$(awk '/^tps = / { print $3; exit }' "$WORK/$name.out")
  p99=$(cat "$WORK/log-$name"/tx* | awk '{ print $3 }' | sort -n | awk '{ a[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f", a[i] / 1000 }')
  echo "$tps $p99"
}

echo
echo "data: $(cat "$WORK/loadgen.log"); $ROWS_T traffic_hour rows, $ROWS_P pages_day rows (10 sites, 30 days)"
printf "%-40s %9s %7s %8s | %9s %7s %8s | %9s %7s\n" "query ($CLIENTS clients, ${DURATION}s each)" \
  "cached" "p99 ms" "ratio" "no cache" "p99 ms" "ratio" "postgres" "p99 ms"
for q in q1 q2 q3; do
  read -r gtps gp99 < <(run "gw-$q" "$GW" "$WORK/$q.sql")
  read -r ntps np99 < <(run "nc-$q" "$NC" "$WORK/$q.sql")
  read -r ptps pp99 < <(run "pg-$q" "$REF" "$WORK/$q.sql" "-c search_path=tally_bench")
  case $q in
    q1) label="q1 hourly traffic, 7 days";;
    q2) label="q2 top 10 pages, 30 days";;
    q3) label="q3 Grafana time series";;
  esac
  printf "%-40s %9.0f %7s %7.2fx | %9.0f %7s %7.2fx | %9.0f %7s\n" "$label" "$gtps" "$gp99" "$(echo "$gtps / $ptps" | bc -l)" \
    "$ntps" "$np99" "$(echo "$ntps / $ptps" | bc -l)" "$ptps" "$pp99"
done

# Memory with 100 idle connections.
RSS_BEFORE=$(awk '/VmRSS/ { print $2 }' "/proc/$GATEWAY_PID/status")
python3 - "$GPORT" "$GATEWAY_PID" <<'PY'
import sys, time, psycopg2
port, pid = int(sys.argv[1]), sys.argv[2]
conns = [psycopg2.connect(host="127.0.0.1", port=port, user="tally", dbname="tally") for _ in range(100)]
for c in conns:
    c.cursor().execute("select 1")
time.sleep(1)
rss = [l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0]
print(f"gateway RSS with 100 idle connections: {int(rss) / 1024:.1f} MB", end="")
for c in conns:
    c.close()
PY
echo " (before: $((RSS_BEFORE / 1024)) MB)"
psql "$REF" -q -c "set client_min_messages = warning" -c "drop schema tally_bench cascade"

#!/usr/bin/env python3
"""Freshness probe for bench/streamer.sh.

While the load runs, post one page view with a unique path to ingest (as the
tracker does), note when the 202 arrives, then query the gateway over the
PostgreSQL protocol until that page's minute bucket shows it. Prints one
latency per probe (milliseconds) and a summary line.

usage: freshness.py INGEST_URL PG_PORT SITE PROBES INTERVAL_S
"""

import json
import sys
import time
import urllib.request

import psycopg2


def post(ingest: str, site: str, path: str) -> int:
    body = json.dumps({"n": "pageview", "u": f"https://{site}{path}", "d": site}).encode()
    req = urllib.request.Request(
        f"{ingest}/api/event",
        data=body,
        headers={
            "content-type": "text/plain",
            "user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        },
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def main() -> None:
    ingest, port, site, probes, interval = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="tally", dbname="tally")
    conn.autocommit = True
    cur = conn.cursor()
    sql = (
        "select pageviews from pages_minute where site = %s and path = %s "
        "and bucket >= now() - interval '10 minutes'"
    )
    latencies = []
    run = int(time.time())
    for i in range(probes):
        path = f"/probe/{run}/{i}"
        status = post(ingest, site, path)
        accepted = time.monotonic()
        if status != 202:
            raise SystemExit(f"probe {i}: ingest answered {status}")
        while True:
            cur.execute(sql, (site, path))
            if cur.fetchall():
                break
            if time.monotonic() - accepted > 30:
                raise SystemExit(f"probe {i}: not visible after 30 s")
            time.sleep(0.002)
        latencies.append((time.monotonic() - accepted) * 1000)
        time.sleep(interval)
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(round(p / 100 * (len(latencies) - 1))))]

    print(
        f"probes={len(latencies)} p50_ms={pct(50):.1f} p90_ms={pct(90):.1f} "
        f"p99_ms={pct(99):.1f} max_ms={latencies[-1]:.1f}"
    )


if __name__ == "__main__":
    main()

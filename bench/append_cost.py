#!/usr/bin/env python3
"""Redis CPU per event of ingest's append script, beside a bare XADD.

Where Redis spends its time when ingest stores events: this sends calls of
the real `ingest/src/append.lua`, with the argument layout of
`ingest/src/writer.rs` and the record shape of `bench/ingest.sh`, straight to
a private redis-server (AOF on, `appendfsync everysec`, as the other
benchmarks run it), pipelined so that the client is never the limit, and
reads Redis's own CPU time (`INFO cpu`) before and after. Three runs:

1. the script, every event from a new visitor (its field missing from the
   three windows' visits and then added to one: what a stream of many
   browsers costs);
2. the script, all events of a call from one visitor whose visit is open
   (what `bench/ingest.sh`'s single wrk client costs);
3. the reference: pipelined plain `XADD`s of one event's record each.

usage: bench/append_cost.py [events_per_call=8] [calls=20000]
APPEND_SCRIPT=path measures another version of the script (to compare two).
RECORD=full sends the 12-field record instead of the packed one (`t`, `v`,
`e`, `i`) that ingest stores (schema/src/event.rs). ENTRY_EVENTS=k stores at
most k events per stream entry (ingest's default: 100; 1 is one entry per
event, as before 2026-11-27).
REDIS_EXTRA_ARGS adds redis-server options (e.g. "--hash-max-listpack-entries 64").
INSTRUCTIONS=1 runs redis-server under valgrind's callgrind and reports the
instructions Redis executes per event as well: repeatable where CPU time on
a shared machine is not (slow: use fewer calls, e.g. 8 2000).
needs: redis-server, python3 (no client library: RESP is written by hand);
valgrind for INSTRUCTIONS=1
"""

import os
import glob
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIELDS = ["t", "s", "n", "u", "r", "v", "a", "c", "p", "$", "w", "i"]
PACKED = os.environ.get("RECORD", "packed") != "full"
SESSION_TIMEOUT_MS = 30 * 60 * 1000
# ingest/src/writer.rs's WriterOptions::entry_events.
ENTRY_EVENTS = int(os.environ.get("ENTRY_EVENTS", "100"))


def resp(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Callgrind:
    """Instruction counts of a redis-server running under callgrind."""

    def __init__(self, pid, work):
        self.pid, self.work = pid, work

    def zero(self):
        subprocess.run(["callgrind_control", "-z", str(self.pid)], check=True, capture_output=True)

    def instructions(self):
        before = set(glob.glob(os.path.join(self.work, "callgrind.out*")))
        subprocess.run(["callgrind_control", "-d", str(self.pid)], check=True, capture_output=True)
        (dump,) = set(glob.glob(os.path.join(self.work, "callgrind.out*"))) - before
        with open(dump) as f:
            for line in f:
                if line.startswith("totals:") or line.startswith("summary:"):
                    return int(line.split()[1])
        raise RuntimeError(f"no totals in {dump}")


class Conn:
    def __init__(self, port, callgrind=None):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")
        self.callgrind = callgrind

    def reply(self):
        line = self.file.readline()
        kind = line[:1]
        if kind == b"-":
            raise RuntimeError(line.decode().strip())
        if kind == b"$":
            n = int(line[1:])
            return self.file.read(n + 2)[:-2] if n >= 0 else None
        if kind == b"*":
            return [self.reply() for _ in range(int(line[1:]))]
        return line[1:].strip()

    def call(self, *args):
        self.sock.sendall(resp(args))
        return self.reply()

    def cpu_seconds(self):
        info = self.call("INFO", "cpu").decode()
        d = dict(x.split(":", 1) for x in info.split("\r\n") if ":" in x)
        return float(d["used_cpu_user"]) + float(d["used_cpu_sys"])

    def pipelined(self, requests, total, depth=50):
        """Send `total` requests (cycling through `requests`), `depth` at a
        time, reading every reply; Redis CPU seconds spent and, under
        callgrind, instructions executed."""
        before = self.cpu_seconds()
        if self.callgrind:
            self.callgrind.zero()
        sent = 0
        while sent < total:
            k = min(depth, total - sent)
            self.sock.sendall(b"".join(requests[(sent + j) % len(requests)] for j in range(k)))
            for _ in range(k):
                self.reply()
            sent += k
        instructions = self.callgrind.instructions() if self.callgrind else None
        return self.cpu_seconds() - before, instructions


def record_fields(visitor):
    """Field names and values of bench/ingest.sh's payload after enrichment,
    as ingest's writer sends them; the time (first) and the session (last)
    are set by the script."""
    values = ["", "shop.example", "", "/products/item-3?utm_source=newsletter", "https://www.google.com/",
              str(visitor), "Chrome\x1fWindows 10\x1fdesktop", "", "", "", "1", ""]
    if PACKED:
        return ["t", "v", "e", "i"], [values[0], values[5], "\x1e".join(values[1:5] + values[6:-1]), values[-1]]
    return FIELDS, values


def append_call(sha, n, visitors, now_ms, rng):
    """One call of the script as ingest's writer makes it: the events of one
    visit window, up to ENTRY_EVENTS of them per stream entry."""
    window = now_ms // SESSION_TIMEOUT_MS
    keys = ["tally:{s03}:events"] + [f"tally:{{s03}}:visits:{w}" for w in (window - 1, window, window + 1)]
    names, _ = record_fields(0)
    argv = [n, len(names), SESSION_TIMEOUT_MS, ENTRY_EVENTS] + names
    argv += [f"{visitor:016x}:shop.example" for visitor in visitors]
    for visitor in visitors:
        _, values = record_fields(visitor)
        values[0] = now_ms
        argv += [now_ms] + values[1:-1] + [rng.randrange(1, 2**62)]
    return resp(["EVALSHA", sha, len(keys)] + keys + argv)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    work = tempfile.mkdtemp()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    counting = os.environ.get("INSTRUCTIONS") == "1"
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.out"] if counting else []
    server = subprocess.Popen(
        wrapper + ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", work, "--appendonly", "yes",
         "--appendfsync", "everysec", "--save", "", "--logfile", os.path.join(work, "redis.log")]
        + os.environ.get("REDIS_EXTRA_ARGS", "").split(),
        stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):
            try:
                conn = Conn(port, Callgrind(server.pid, work) if counting else None)
                conn.call("PING")
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not start")
        script = open(os.environ.get("APPEND_SCRIPT") or os.path.join(ROOT, "ingest", "src", "append.lua")).read()
        sha = conn.call("SCRIPT", "LOAD", script).decode()
        rng = random.Random(1)
        now_ms = int(time.time() * 1000)
        events = n * calls
        results = []

        fresh = iter(range(1, 10**12))
        new_visits = [append_call(sha, n, [next(fresh) for _ in range(n)], now_ms, rng) for _ in range(calls)]
        results.append(("append.lua, every event a new visitor", conn.pipelined(new_visits, calls)))
        del new_visits
        conn.call("FLUSHALL")

        same = [append_call(sha, n, [7] * n, now_ms, rng) for _ in range(200)]
        results.append(("append.lua, one open visit per call", conn.pipelined(same, calls)))
        conn.call("FLUSHALL")

        xadd = ["XADD", "tally:{s03}:events", "*"]
        for name, value in zip(*record_fields(7)):
            xadd += [name, value]
        xadd[4], xadd[-1] = "-3", "4815162342"
        results.append(("plain XADD, pipelined (reference)", conn.pipelined([resp(xadd)], events)))

        layout = "packed" if PACKED else "12-field"
        print(f"Redis CPU per event, {layout} record, {n} events per script call, {events} events per run:")
        ref_seconds, ref_instructions = results[-1][1]
        for label, (seconds, instructions) in results:
            line = f"  {label:42s} {seconds * 1e6 / events:6.2f} us  ({seconds / ref_seconds:.2f}x XADD)"
            if instructions is not None:
                line += f"  {instructions / events:8.0f} instructions ({instructions / ref_instructions:.2f}x XADD)"
            print(line)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

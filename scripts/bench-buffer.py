#!/usr/bin/env python3
"""Disk buffer against memory buffer: the same generated log through `herald run` into a file
sink, timed from start until every event is in the file; median of RUNS runs each.

usage: scripts/bench-buffer.py [HERALD_BINARY] [LINES] [RUNS]
       (default target/release/herald, 1000000 lines, 5 runs)
"""
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

herald = sys.argv[1] if len(sys.argv) > 1 else "target/release/herald"
lines = sys.argv[2] if len(sys.argv) > 2 else "1000000"
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5

with tempfile.TemporaryDirectory() as d:
    log = os.path.join(d, "events.log")
    with open(log, "wb") as f:
        subprocess.run([herald, "generate", "--seed", "3", "--lines", lines], stdout=f, check=True)
    want = subprocess.run([herald, "replay", "--cluster", "prod", log], capture_output=True).stdout.count(b"\n")

    def once(buffer):
        run = tempfile.mkdtemp(dir=d)
        out = os.path.join(run, "out.jsonl")
        cfg = os.path.join(run, "h.toml")
        with open(cfg, "w") as f:
            f.write('[server]\nlisten = "127.0.0.1:0"\n[state]\ndir = "%s/state"\n'
                    '[sources.log]\ntype = "file"\npath = "%s"\ncluster = "prod"\n'
                    '[sinks.out]\ntype = "file"\npath = "%s"\n[sinks.out.buffer]\ntype = "%s"\n'
                    % (run, log, out, buffer))
        start = time.monotonic()
        h = subprocess.Popen([herald, "run", "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                with open(out, "rb") as f:
                    if f.read().count(b"\n") >= want:
                        break
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        took = time.monotonic() - start
        h.send_signal(signal.SIGTERM)
        h.wait()
        return took

    result = {}
    for buffer in ("memory", "disk"):
        times = [once(buffer) for _ in range(runs)]
        result[buffer] = statistics.median(times)
        print("%-6s buffer: median %.3f s over %d runs -> %.0f events/s (%d events from %s lines)"
              % (buffer, result[buffer], runs, want / result[buffer], want, lines), flush=True)
    print("disk/memory throughput ratio: %.2f" % (result["memory"] / result["disk"]))

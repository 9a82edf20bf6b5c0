#!/usr/bin/env python3
"""State store benchmark (not a test): what a commit costs with a million keys held.

  1. `herald run` over a 2,000,000-line log of 1,000,000 routers (each comes online once,
     then random routers flip): time until its last event is out, against `herald replay`
     of the same log, in turns;
  2. with those 1,000,000 keys held, 60 s of live router flips at 100 a second: bytes the
     process writes to disk (/proc/PID/io write_bytes) per changed key, with a stdout sink to
     /dev/null and no disk buffer, so that only the state store writes;
  3. a restart with those keys held: time until /readyz answers 200;
  4. the 1,000,000-line default mix (`herald generate --seed 1`): records per second of
     `herald run` against `herald replay`, in turns.

usage: scripts/bench-state.py [HERALD_BINARY] [ROUNDS] [--only 1,2,3,4] [--generator BINARY]
                              [--without-state]
       (default target/release/herald, 3 rounds; build it with `cargo build --release`;
       the logs are written by `--generator`, by default the binary measured;
       `--without-state` runs parts 1 and 4 with no `[state] dir`)
"""
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone

argv = sys.argv[1:]
generator = None
if "--generator" in argv:
    i = argv.index("--generator")
    generator = os.path.abspath(argv[i + 1])
    del argv[i:i + 2]
if "--only" in argv:
    i = argv.index("--only")
    only = set(argv[i + 1].split(","))
    del argv[i:i + 2]
else:
    only = {"1", "2", "3", "4"}
# Parts 1 and 4 without a `[state] dir`: what the pipeline costs around the store.
stateless = "--without-state" in argv
args = [a for a in argv if not a.startswith("--")]
herald = os.path.abspath(args[0] if args else "target/release/herald")
rounds = int(args[1]) if len(args) > 1 else 3
generator = generator or herald
work = tempfile.mkdtemp(prefix="herald-bench-state-")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def generate(path, *flags):
    with open(path, "wb") as f:
        subprocess.run([generator, "generate", *flags], stdout=f, check=True)


def lines(path):
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def replay(log, out):
    t = time.monotonic()
    with open(out, "wb") as f:
        subprocess.run([herald, "replay", "--cluster", "prod", log], stdout=f, check=True)
    return time.monotonic() - t


def config(dir, log, port, state=True):
    path = os.path.join(dir, "herald.toml")
    with open(path, "w") as f:
        if state:
            f.write('[state]\ndir = "%s"\n' % os.path.join(dir, "state"))
        f.write('[server]\nlisten = "127.0.0.1:%d"\n' % port)
        f.write('[sources.log]\ntype = "file"\npath = "%s"\ncluster = "prod"\n' % log)
        f.write('[sinks.out]\ntype = "stdout"\n')
    return path


def ready(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def keys(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("herald_keys "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0


def start(cfg, out):
    return subprocess.Popen([herald, "run", "--config", cfg], stdout=out, stderr=subprocess.DEVNULL)


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def run_until(cfg, out_path, size):
    """Starts `herald run`, returns (seconds until `size` bytes of events are out, the
    process). Its events are replay's, byte for byte: the size says when the last is out,
    without reading the file again at every look."""
    out = open(out_path, "wb")
    t = time.monotonic()
    p = start(cfg, out)
    # Every 10 ms: `replay` is timed to its exit, and a coarser look would add its half
    # interval to every run (2.5% of a one-second run at 50 ms).
    while os.path.getsize(out_path) < size:
        if p.poll() is not None:
            raise SystemExit("herald run exited early")
        time.sleep(0.01)
    return time.monotonic() - t, p


def replay_then_run(log):
    """One round: `replay` of `log`, then `run` over it; (replay s, run s, events)."""
    d = tempfile.mkdtemp(dir=work)
    replayed = os.path.join(d, "replay.jsonl")
    rep = replay(log, replayed)
    secs, p = run_until(config(d, log, free_port(), state=not stateless), os.path.join(d, "run.jsonl"),
                        os.path.getsize(replayed))
    stop(p)
    return rep, secs, lines(replayed)


def write_bytes(pid):
    with open("/proc/%d/io" % pid) as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def ratio_rows(name, pairs, unit):
    print("\n%s" % name)
    for i, (a, b) in enumerate(pairs):
        print("  round %d: replay %.2f %s, run %.2f %s, run/replay %.2f" % (i + 1, a, unit, b, unit, b / a))


routers_log = os.path.join(work, "routers.jsonl")
n_routers = 1_000_000
if only & {"1", "2", "3"}:
    generate(routers_log, "--routers", str(n_routers), "--router-flips", "--lines", "2000000")

if "1" in only:
    rounds_1 = [replay_then_run(routers_log) for _ in range(rounds)]
    ratio_rows("1. 2,000,000 lines, 1,000,000 routers: seconds to the last event (%d events)"
               % rounds_1[0][2], [(a, b) for a, b, _ in rounds_1], "s")

if only & {"2", "3"}:
    d = tempfile.mkdtemp(dir=work)
    # The startup burst only: 1,000,000 routers online, then live flips appended.
    live_log = os.path.join(d, "live.jsonl")
    generate(live_log, "--routers", str(n_routers), "--router-flips", "--lines", str(n_routers + 8))
    port = free_port()
    cfg = config(d, live_log, port)
    p = start(cfg, subprocess.DEVNULL)
    while keys(port) < n_routers:
        if p.poll() is not None:
            raise SystemExit("herald run exited early")
        time.sleep(0.5)
    # Until the load is applied and its flushes and compactions have settled: nothing
    # written for 30 s.
    prev, still = -1, 0
    while still < 6:
        time.sleep(5)
        now = write_bytes(p.pid)
        still = still + 1 if now == prev else 0
        prev = now
    if "2" in only:
        before = write_bytes(p.pid)
        offline = {}
        rate, seconds = 100, 60
        t0 = time.monotonic()
        with open(live_log, "a") as f:
            for i in range(rate * seconds):
                r = random.randint(1, n_routers)
                online = offline.get(r, False)
                offline[r] = not online
                at = datetime.now(timezone.utc).isoformat()
                f.write('{"namespace":"router","event_src_id":"ctrl1","timestamp":"%s","event_type":"%s","router_id":"rtr%03d","router_online":%s}\n'
                        % (at, "router-online" if online else "router-offline", r, "true" if online else "false"))
                f.flush()
                delay = t0 + (i + 1) / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        time.sleep(3)  # the last windows close and commit
        written = write_bytes(p.pid) - before
        changes = rate * seconds
        print("\n2. 1,000,000 keys held, %d changes in %d s: %d bytes written, %.0f bytes per changed key"
              % (changes, seconds, written, written / changes))
    stop(p)
    if "3" in only:
        for r in range(rounds):
            t = time.monotonic()
            p = start(cfg, subprocess.DEVNULL)
            while not ready(port):
                if p.poll() is not None:
                    raise SystemExit("herald run exited early")
                time.sleep(0.02)
            secs = time.monotonic() - t
            print("\n3. restart %d with 1,000,000 keys held: /readyz 200 after %.2f s" % (r + 1, secs)
                  if r == 0 else "   restart %d: %.2f s" % (r + 1, secs))
            stop(p)

if "4" in only:
    mix = os.path.join(work, "mix.jsonl")
    generate(mix, "--seed", "1", "--lines", "1000000")
    records = lines(mix)
    pairs = [(records / a, records / b) for a, b, _ in (replay_then_run(mix) for _ in range(rounds))]
    print("\n4. default mix, 1,000,000 lines: records per second")
    for i, (a, b) in enumerate(pairs):
        print("  round %d: replay %.0f/s, run %.0f/s, run/replay %.2f" % (i + 1, a, b, b / a))

subprocess.run(["rm", "-rf", work])

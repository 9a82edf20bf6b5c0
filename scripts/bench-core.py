#!/usr/bin/env python3
"""Core instance benchmark (not a test): a herald reading an edge's raw topic (DESIGN §10).

  1. records per second of one core instance (a `kafka` source in a group of one, a file
     sink) reading a raw topic an edge filled with the default mix, against `herald replay`
     of the same log, in turns: seconds until the core's last event is out, in all and from
     its first record read (joining the group comes first);
  2. restore time of a partition's engine holding 100,000 keys from its changelog: a first
     core reads a log of 100,000 routers and stops; a second one, with an empty `[state]
     dir`, is given the partition and restores it from the changelog alone.

It starts its own tansu (in-memory storage) on a free port; scripts/services.sh installs it.

usage: scripts/bench-core.py [HERALD_BINARY] [ROUNDS] [--lines N] [--keys N] [--only 1,2]
       (default target/release/herald, 3 rounds, 1,000,000 lines, 100,000 keys; build it
       with `cargo build --release`; BENCH_PERF=FILE records a `perf` profile of part 1's
       core into FILE)
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone

argv = sys.argv[1:]


def option(name, default):
    if name in argv:
        i = argv.index(name)
        value = argv[i + 1]
        del argv[i:i + 2]
        return int(value)
    return default


only = set(argv.pop(argv.index("--only") + 1).split(",")) if "--only" in argv else {"1", "2"}
if "--only" in argv:
    argv.remove("--only")
n_lines = option("--lines", 1_000_000)
n_keys = option("--keys", 100_000)
herald = os.path.abspath(argv[0] if argv else "target/release/herald")
rounds = int(argv[1]) if len(argv) > 1 else 3
work = tempfile.mkdtemp(prefix="herald-bench-core-")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


kafka_port = free_port()
bootstrap = "127.0.0.1:%d" % kafka_port
tansu = subprocess.Popen(
    ["tansu", "broker", "--listener-url", "tcp://%s" % bootstrap,
     "--advertised-listener-url", "tcp://%s" % bootstrap, "--storage-engine", "memory://tansu/"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
deadline = time.monotonic() + 30
while not listening(kafka_port):
    if time.monotonic() > deadline:
        raise SystemExit("tansu did not start")
    time.sleep(0.1)


def cpu(pid):
    """User + system CPU seconds of process `pid` so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create_topic(name):
    subprocess.run(["tansu", "topic", "create", name, "--partitions", "1",
                    "--broker", "tcp://%s" % bootstrap], check=True, stdout=subprocess.DEVNULL)


def generate(path, *flags):
    with open(path, "wb") as f:
        subprocess.run([herald, "generate", *flags], stdout=f, check=True)


def lines(path):
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def metric(port, name):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
            total = 0.0
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    total += float(line.split()[-1])
            return total
    except OSError:
        return -1


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def forward(log, topic):
    """An edge forwards `log` to `topic`; returns once every line is acknowledged."""
    d = tempfile.mkdtemp(dir=work)
    port = free_port()
    cfg = write(os.path.join(d, "edge.toml"),
                '[server]\nlisten = "127.0.0.1:%d"\n[state]\ndir = "%s"\n'
                '[sources.log]\ntype = "file"\npath = "%s"\ncluster = "prod"\n'
                '[sinks.raw]\ntype = "kafka"\nbrokers = "%s"\ntopic = "%s"\nencoding = "raw"\n'
                % (port, os.path.join(d, "state"), log, bootstrap, topic))
    edge = subprocess.Popen([herald, "run", "--config", cfg], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(d, "edge.log"), "w"))
    want = lines(log)
    while metric(port, "herald_records_total") < want:
        if edge.poll() is not None:
            raise SystemExit("the edge exited early")
        time.sleep(0.2)
    # Read means forwarded once the file position moved: wait for the last acknowledgement.
    time.sleep(2)
    stop(edge)


def core(d, name, topic, group, port):
    cfg = write(os.path.join(d, name + ".toml"),
                '[server]\nlisten = "127.0.0.1:%d"\n[state]\ndir = "%s"\n[engine]\nkey_ttl = "87600h"\n'
                '[sources.raw]\ntype = "kafka"\nbrokers = "%s"\ntopic = "%s"\ngroup_id = "%s"\n'
                'client."partition.assignment.strategy" = "range"\n'
                # tansu answers a fetch only after half its max wait, records or not.
                'client."fetch.wait.max.ms" = "10"\n'
                '[sinks.out]\ntype = "file"\npath = "%s"\n'
                % (port, os.path.join(d, name + "-state"), bootstrap, topic, group,
                   os.path.join(d, name + ".jsonl")))
    log = open(os.path.join(d, name + ".log"), "w")
    perf = ["perf", "record", "-F", "499", "-g", "-o", os.environ["BENCH_PERF"], "--"] if os.environ.get("BENCH_PERF") and name == "core" else []
    return subprocess.Popen(perf + [herald, "run", "--config", cfg], stdout=subprocess.DEVNULL,
                            stderr=log), os.path.join(d, name + ".jsonl"), os.path.join(d, name + ".log")


def replay(log, out):
    t = time.monotonic()
    with open(out, "wb") as f:
        subprocess.run([herald, "replay", "--cluster", "prod", log],
                       stdout=f, check=True)
    return time.monotonic() - t


# 1. records per second
mix = os.path.join(work, "mix.jsonl")
rounds_1 = rounds if "1" in only else 0
if rounds_1:
    generate(mix, "--seed", "1", "--lines", str(n_lines))
    create_topic("mix")
    forward(mix, "mix")
    records = lines(mix)
    print("1. %d lines of the default mix through a raw topic: seconds to the last event" % records)
for i in range(rounds_1):
    d = tempfile.mkdtemp(dir=work)
    replayed = os.path.join(d, "replay.jsonl")
    rep = replay(mix, replayed)
    size = os.path.getsize(replayed)
    t, wall, broker_before = time.monotonic(), time.time(), cpu(tansu.pid)
    p, out, log = core(d, "core", "mix", "bench-%d" % i, free_port())
    while not os.path.exists(out) or os.path.getsize(out) < size:
        if p.poll() is not None:
            raise SystemExit("the core exited early")
        time.sleep(0.05)
    run = time.monotonic() - t
    core_cpu, broker_cpu = cpu(p.pid), cpu(tansu.pid) - broker_before
    stop(p)
    # Joining the group and being assigned the partition is not reading: the first record
    # read starts the reading.
    with open(log) as f:
        first = re.search(r"^(\S+)Z .*reading partition", f.read(), re.M)
    began = datetime.fromisoformat(first.group(1)).replace(tzinfo=timezone.utc).timestamp() - wall
    reading = run - began
    print("  round %d: replay %.2f s (%.0f records/s); core %.2f s in all, %.2f s of it joining, "
          "%.2f s reading (%.0f records/s); core/replay records/s %.2f (reading), %.2f (in all)"
          % (i + 1, rep, records / rep, run, began, reading, records / reading, rep / reading, rep / run))
    print("           CPU meanwhile: core %.2f s, broker %.2f s" % (core_cpu, broker_cpu))

# 2. restore of a partition's engine holding n_keys keys
routers = os.path.join(work, "routers.jsonl")
rounds_2 = rounds if "2" in only else 0
if rounds_2:
    generate(routers, "--routers", str(n_keys), "--router-flips", "--lines", str(n_keys + 8))
    create_topic("routers")
    forward(routers, "routers")
    print("\n2. restore of a partition's engine holding %d keys from its changelog" % n_keys)
for i in range(rounds_2):
    d = tempfile.mkdtemp(dir=work)
    group = "restore-%d" % i
    port = free_port()
    first, _, _ = core(d, "first", "routers", group, port)
    while metric(port, "herald_keys") < n_keys:
        if first.poll() is not None:
            raise SystemExit("the first core exited early")
        time.sleep(0.2)
    time.sleep(3)
    stop(first)
    second, _, log = core(d, "second", "routers", group, free_port())
    restored = None
    deadline = time.monotonic() + 300
    while restored is None and time.monotonic() < deadline:
        time.sleep(0.2)
        with open(log) as f:
            text = f.read()
        m = re.search(r"partition engine restored.* keys=(\d+).* seconds=([0-9.e-]+)", text)
        read = re.search(r"changelog partition read.* records=(\d+)", text)
        if m:
            restored = (int(m.group(1)), float(m.group(2)), int(read.group(1)) if read else -1)
    stop(second)
    if restored is None:
        raise SystemExit("the second core did not restore the partition: see %s" % log)
    keys, secs, recs = restored
    print("  round %d: %d keys from %d changelog records in %.2f s" % (i + 1, keys, recs, secs))

stop(tansu)

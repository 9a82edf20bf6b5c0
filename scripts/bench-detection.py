#!/usr/bin/env python3
"""Detection benchmark (not a test): how long after a SIGKILL of an etcd leader herald
reports `node.down` for it and `cluster.leader_elected` for its successor, beside the
cluster's own election time (until `etcdctl endpoint status` on the survivors names a new
leader). A fresh 3-member cluster on 127.0.0.1 per kill.

usage: scripts/bench-detection.py [HERALD_BINARY] [KILLS]
       (default target/release/herald, 10 kills; build it with `cargo build --release`)
"""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

herald = sys.argv[1] if len(sys.argv) > 1 else "target/release/herald"
kills = int(sys.argv[2]) if len(sys.argv) > 2 else 10


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def etcdctl(endpoints, *args):
    out = subprocess.run(["etcdctl", "--endpoints", ",".join(endpoints), "--dial-timeout", "1s", *args],
                         capture_output=True, text=True, env={**os.environ, "ETCDCTL_API": "3"})
    return out.stdout


def leader_name(endpoints):
    try:
        status = json.loads(etcdctl(endpoints, "endpoint", "status", "-w", "json"))
        leaders = {s["Status"]["leader"] for s in status}
        if len(leaders) != 1 or 0 in leaders:
            return None
        members = json.loads(etcdctl(endpoints, "member", "list", "-w", "json"))["members"]
        return next((m["name"] for m in members if m["ID"] in leaders), None)
    except (ValueError, KeyError):
        return None


def one(dir):
    names = ["etcd1", "etcd2", "etcd3"]
    clients = ["http://127.0.0.1:%d" % free_port() for _ in names]
    peers = ["http://127.0.0.1:%d" % free_port() for _ in names]
    initial = ",".join("%s=%s" % (n, p) for n, p in zip(names, peers))
    procs = []
    for n, c, p in zip(names, clients, peers):
        procs.append(subprocess.Popen(
            ["etcd", "--name", n, "--data-dir", os.path.join(dir, n), "--listen-client-urls", c,
             "--advertise-client-urls", c, "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
             "--initial-cluster", initial, "--initial-cluster-state", "new"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        deadline = time.time() + 30
        first = None
        while first is None and time.time() < deadline:
            first = leader_name(clients)
            time.sleep(0.1)
        cfg = os.path.join(dir, "herald.toml")
        with open(cfg, "w") as f:
            f.write('[server]\nlisten = "127.0.0.1:0"\n[sources.etcd]\ntype = "etcd"\ncluster = "kv"\n'
                    'endpoints = %s\n' % json.dumps(clients))
        h = subprocess.Popen([herald, "run", "--config", cfg], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
        events = []
        threading.Thread(target=lambda: [events.append((time.time(), json.loads(l))) for l in h.stdout],
                         daemon=True).start()
        while not any(e["kind"] == "cluster.leader_elected" and e.get("leader_id") == first for _, e in events):
            time.sleep(0.05)
        time.sleep(1)
        i = names.index(first)
        killed_at = time.time()
        procs[i].send_signal(signal.SIGKILL)
        rest = [c for j, c in enumerate(clients) if j != i]
        elected = None
        while elected is None and time.time() < killed_at + 30:
            l = leader_name(rest)
            if l is not None and l != first:
                elected = time.time() - killed_at
            time.sleep(0.05)
        down = new = None
        while (down is None or new is None) and time.time() < killed_at + 30:
            for t, e in list(events):
                if t < killed_at:
                    continue
                if down is None and e["kind"] == "node.down" and e.get("node") == first:
                    down = t - killed_at
                if new is None and e["kind"] == "cluster.leader_elected" and e.get("leader_id") != first:
                    new = t - killed_at
            time.sleep(0.02)
        h.send_signal(signal.SIGTERM)
        h.wait()
        return elected, down, new
    finally:
        for p in procs:
            p.kill()
            p.wait()


rows = []
for k in range(kills):
    with tempfile.TemporaryDirectory() as d:
        r = one(d)
        print("kill %d: election %.2f s, node.down %.2f s, leader_elected %.2f s" % (k + 1, *r), flush=True)
        rows.append(r)
for name, col in (("etcd election (etcdctl)", 0), ("herald node.down", 1), ("herald cluster.leader_elected", 2)):
    xs = [r[col] for r in rows]
    print("%-32s median %.2f s, worst %.2f s" % (name, statistics.median(xs), max(xs)))

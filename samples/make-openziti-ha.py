#!/usr/bin/env python3
"""Writes samples/openziti-ha.jsonl: a short OpenZiti HA story in real record shapes.

Three controllers start (with the spurious leadership.lost of openziti#2684), a controller's
view blips, a router flaps and then goes offline, a tunneller's terminator spins
(openziti#2121), the leader is partitioned and ctrl2 takes over, ctrl1 comes back.
"""
import datetime
import json
import os

BASE_MS = 1_736_532_000_000  # 2025-01-10T18:00:00Z
TZ = datetime.timezone(datetime.timedelta(hours=-5))


def ts(ms):
    whole, frac = divmod(BASE_MS + ms, 1000)
    d = datetime.datetime.fromtimestamp(whole, TZ)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + ".%03d%06d-05:00" % (frac, 123456)


lines = []


def cl(ms, src, typ, **kw):
    r = {"namespace": "cluster", "event_src_id": src, "timestamp": ts(ms), "eventType": typ}
    r.update(kw)
    lines.append(r)


def peers(*ids):
    return [{"id": i, "addr": "tls:%s.example.net:6262" % i, "version": "v1.6.2"} for i in ids]


def rt(ms, rid, online):
    lines.append({"namespace": "router", "event_src_id": "ctrl1", "timestamp": ts(ms),
                  "event_type": "router-online" if online else "router-offline",
                  "router_id": rid, "router_online": online})


def term(ms, typ, tid):
    lines.append({"namespace": "terminator", "event_type": typ, "event_src_id": "ctrl1",
                  "timestamp": ts(ms), "service_id": "svc-billing", "terminator_id": tid,
                  "router_id": "edge-west", "host_id": "tunneller-7", "router_online": True,
                  "precedence": "default", "static_cost": 0, "dynamic_cost": 0})


ctrls = ["ctrl1", "ctrl2", "ctrl3"]
for i, c in enumerate(ctrls):
    t = 10 * i
    cl(t, c, "members.changed", index=3, peers=peers(*ctrls))
    for p in ctrls:
        if p != c:
            cl(t + 2, c, "peer.connected", peers=peers(p))
    cl(t + 4, c, "state.is_leaderless")
cl(50, "ctrl1", "leadership.gained")
cl(51, "ctrl1", "leadership.lost")
cl(52, "ctrl1", "leadership.gained")
for i, c in enumerate(ctrls):
    cl(300 + 5 * i, c, "state.has_leader", leaderId="ctrl1")
rt(1000, "edge-west", True)
rt(1100, "edge-east", True)
cl(20_000, "ctrl3", "state.is_leaderless")
cl(20_600, "ctrl3", "state.has_leader", leaderId="ctrl1")
rt(30_000, "edge-east", False)
rt(30_300, "edge-east", True)
rt(45_000, "edge-east", False)
for k in range(5):
    term(50_000 + 4000 * k, "created", "t%d" % k)
    term(51_500 + 4000 * k, "deleted", "t%d" % k)
cl(120_000, "ctrl2", "peer.disconnected", peers=peers("ctrl1"))
cl(120_100, "ctrl3", "peer.disconnected", peers=peers("ctrl1"))
cl(120_200, "ctrl2", "state.is_leaderless")
cl(120_250, "ctrl3", "state.is_leaderless")
cl(121_400, "ctrl2", "leadership.gained")
cl(121_450, "ctrl2", "state.has_leader", leaderId="ctrl2")
cl(121_500, "ctrl3", "state.has_leader", leaderId="ctrl2")
lines.append({"namespace": "connect", "src_type": "identity", "src_id": "ji2Rt8KJ4",
              "src_addr": "127.0.0.1:59336", "dst_id": "ctrl2",
              "dst_addr": "localhost:1280/edge/management/v1/services", "timestamp": ts(125_000)})
lines.append({"namespace": "sdk", "event_type": "sdk-online", "identity_id": "ji2Rt8KJ4",
              "timestamp": ts(125_500)})
cl(180_000, "ctrl1", "leadership.lost")
cl(180_100, "ctrl1", "state.has_leader", leaderId="ctrl2")
cl(180_200, "ctrl2", "peer.connected", peers=peers("ctrl1"))
cl(180_300, "ctrl3", "peer.connected", peers=peers("ctrl1"))
lines.sort(key=lambda r: r["timestamp"])
# OpenZiti dispatches each event on its own goroutine: one pair arrives swapped.
i = next(i for i, r in enumerate(lines) if r.get("eventType") == "peer.disconnected")
lines[i], lines[i + 1] = lines[i + 1], lines[i]
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "openziti-ha.jsonl")
with open(out, "w") as f:
    for r in lines:
        f.write(json.dumps(r, separators=(",", ":")) + "\n")

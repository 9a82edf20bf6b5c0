#!/usr/bin/env bash
# ZooKeeper chaos check (a script, not part of the test suite: three JVMs and an election do
# not fit the CI budget beside the etcd test). Starts a 3-server ensemble (Debian's
# `zookeeper` package) on 127.0.0.1 with `srvr` whitelisted, runs herald's `zookeeper` source
# against it, SIGKILLs the leader, and prints herald's events with what `srvr` says after.
#
# usage: scripts/zookeeper-chaos.sh [HERALD_BINARY]   (default target/release/herald)
set -euo pipefail
herald=${1:-target/release/herald}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
cp="/usr/share/java/zookeeper.jar:/usr/share/java/*"
base=$((20000 + RANDOM % 20000))
servers=""
for i in 1 2 3; do
  mkdir -p "$dir/zk$i"
  echo "$i" > "$dir/zk$i/myid"
done
for i in 1 2 3; do
  {
    echo "tickTime=500"; echo "initLimit=10"; echo "syncLimit=5"
    echo "dataDir=$dir/zk$i"; echo "clientPort=$((base + i))"; echo "clientPortAddress=127.0.0.1"
    echo "4lw.commands.whitelist=srvr"
    for j in 1 2 3; do echo "server.$j=127.0.0.1:$((base + 10 + j)):$((base + 20 + j))"; done
  } > "$dir/zk$i.cfg"
  java -cp "$cp" -Dzookeeper.log.dir="$dir" org.apache.zookeeper.server.quorum.QuorumPeerMain \
    "$dir/zk$i.cfg" > "$dir/zk$i.log" 2>&1 &
  echo $! > "$dir/zk$i.pid"
  servers="${servers}zk$i = \"127.0.0.1:$((base + i))\"\n"
done
mode() { (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf srvr >&3 && cat <&3) 2>/dev/null | sed -n 's/^Mode: //p'; }
leader=""
for _ in $(seq 1 120); do
  for i in 1 2 3; do [ "$(mode $((base + i)))" = leader ] && leader=$i; done
  [ -n "$leader" ] && break
  sleep 0.5
done
[ -n "$leader" ] || { echo "no leader elected"; exit 1; }
echo "leader: zk$leader"
printf '[server]\nlisten = "127.0.0.1:0"\n[sources.zk]\ntype = "zookeeper"\ncluster = "zk"\n[sources.zk.servers]\n%b' "$servers" > "$dir/herald.toml"
"$herald" run --config "$dir/herald.toml" > "$dir/events.jsonl" 2> "$dir/herald.log" &
sleep 5
echo "SIGKILL zk$leader at $(date -u +%H:%M:%S.%N)"
kill -9 "$(cat "$dir/zk$leader.pid")"
sleep 15
for i in 1 2 3; do echo "zk$i: $(mode $((base + i)) || true)"; done
echo "herald's events:"
cat "$dir/events.jsonl"

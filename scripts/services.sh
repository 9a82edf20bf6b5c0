#!/usr/bin/env bash
# Installs and starts what herald's tests need, idempotently: what is there is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'services: %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

updated=""
apt_install() {
  if ! have apt-get; then
    log "cannot install $* (no apt-get): install it and run again"
    exit 1
  fi
  if [ -z "$updated" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    updated=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# promtool and prometheus (the dashboards' and alerts' tests), curl and openssl (HTTPS test).
have promtool || apt_install prometheus
# Alertmanager and amtool (the alert routing's end-to-end test).
have prometheus-alertmanager || apt_install prometheus-alertmanager
have curl || apt_install curl
have openssl || apt_install openssl
# systemd-analyze (the unit's verify test).
have systemd-analyze || apt_install systemd
# Headless Chromium (the timeline test renders the page it draws).
have chromium || apt_install chromium
# rsyslog with its GnuTLS driver (the syslog sink's tests start their own rsyslogd each).
have rsyslogd || apt_install rsyslog
compgen -G '/usr/lib/*/rsyslog/lmnsd_gtls.so' >/dev/null || apt_install rsyslog-gnutls

# Real raft clusters for the pollers' tests: etcd (each test starts its own 3-member cluster)
# and ZooKeeper.
have etcd || apt_install etcd-server
have etcdctl || apt_install etcd-client
[ -x /usr/share/zookeeper/bin/zkServer.sh ] || apt_install zookeeper

# NATS with JetStream on 127.0.0.1:4222 (the NATS sink's tests; one test starts its own).
have nats-server || apt_install nats-server
if ! listening 4222; then
  log "starting nats-server with JetStream on 127.0.0.1:4222"
  mkdir -p /var/lib/nats-server
  if have start-stop-daemon; then
    start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  else
    nohup nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server >/dev/null 2>&1 &
  fi
  for _ in $(seq 1 100); do listening 4222 && break; sleep 0.1; done
  listening 4222 || { log "nats-server did not start"; exit 1; }
fi

# A Kafka-compatible broker: tansu, pinned. Building it takes about 15 minutes the first time.
export PATH="$HOME/.cargo/bin:$PATH"
if ! have tansu || ! tansu --version 2>/dev/null | grep -q '0.6.0'; then
  log "installing tansu 0.6.0 (cargo install; the first build is slow)"
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --quiet
fi
if ! listening 9092; then
  log "starting tansu on 127.0.0.1:9092 (memory storage)"
  nohup tansu broker --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine memory://tansu/ \
    >/tmp/herald-tansu.log 2>&1 &
  for _ in $(seq 1 100); do listening 9092 && break; sleep 0.1; done
  listening 9092 || { log "tansu did not start: see /tmp/herald-tansu.log"; exit 1; }
fi

# kafka-python: an independent client to read back what herald wrote.
python3 -c 'import kafka' 2>/dev/null || {
  log "installing kafka-python"
  python3 -m pip install --quiet --disable-pip-version-check kafka-python==3.0.12
}
# pycef: an independent reader of the CEF lines herald writes.
python3 -c 'import pycef' 2>/dev/null || {
  log "installing pycef"
  python3 -m pip install --quiet --disable-pip-version-check pycef==1.11
}

log "ready: promtool, alertmanager, nats-server on :4222, tansu on :9092, kafka-python"

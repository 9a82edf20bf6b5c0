#!/usr/bin/env bash
# Starts the services herald's tests need, idempotently: a service already up is left alone.
# Each later service (brokers, Prometheus, etcd, ZooKeeper) adds a `need_*` line below.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'services: %s\n' "$*" >&2; }

# Whether something accepts TCP connections on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The suite currently needs no external service: replay, decode and the engine run on their own.
log "no external services needed"

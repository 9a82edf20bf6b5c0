#!/usr/bin/env bash
# Installs and starts what herald's tests need, idempotently: what is there is left alone.
# Later services (brokers, etcd, ZooKeeper) add their lines below.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'services: %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

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

# promtool checks metric names (Debian ships it in the prometheus package); curl and openssl
# drive the HTTPS test.
have promtool || apt_install prometheus
have curl || apt_install curl
have openssl || apt_install openssl

log "ready: promtool $(promtool --version 2>&1 | head -n1 | awk '{print $3}')"

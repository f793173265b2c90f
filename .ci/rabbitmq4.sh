#!/usr/bin/env bash
# rabbitmq4.sh - a RabbitMQ 4.x node on this Debian 12 machine, beside the 3.10 one.
#
# Debian 12 ships RabbitMQ 3.10; Debian 13 (trixie) ships RabbitMQ 4.0 with the Erlang
# it needs. This script builds a minimal trixie root with debootstrap (from the same
# Debian package mirror the machine's apt already uses), and runs RabbitMQ 4.0 inside
# it with chroot, listening on 127.0.0.1:$PORT. Root only; no Docker, no systemd.
# Building the root takes 1-3 minutes and about 400 MB, once per machine.
#
#   ./rabbitmq4.sh up        build the root if missing, start the node, wait for it
#   ./rabbitmq4.sh url       print the AMQP URL (amqp://guest:guest@127.0.0.1:$PORT/)
#   ./rabbitmq4.sh ctl ARGS  rabbitmqctl against the node (e.g. ctl list_queues)
#   ./rabbitmq4.sh version   the node's RabbitMQ version
#   ./rabbitmq4.sh stop      stop the node
#   ./rabbitmq4.sh deprecations   the node log's deprecation warnings (exit 1 if any)
#
# Env: RABBITMQ4_ROOT (default /opt/rabbitmq4-root), RABBITMQ4_PORT (default 5682),
#      RABBITMQ4_DIST_PORT (default 25682), RABBITMQ4_NODE (default rabbit4@localhost),
#      RABBITMQ4_SUITE (default trixie).
# Tested: RabbitMQ 4.0.5 / Erlang 27 in trixie, host Debian 12, next to the host's
# RabbitMQ 3.10 on 5672 (they share the host's epmd; node name rabbit4@localhost).
set -euo pipefail
ROOT=${RABBITMQ4_ROOT:-/opt/rabbitmq4-root}
PORT=${RABBITMQ4_PORT:-5682}
DIST=${RABBITMQ4_DIST_PORT:-25682}
SUITE=${RABBITMQ4_SUITE:-trixie}
NODE=${RABBITMQ4_NODE:-rabbit4@localhost}

mirror() {  # the first Debian mirror this machine's apt is configured with
  local m
  m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
  [ -n "$m" ] || m=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -1)
  [ -n "$m" ] || { echo "no Debian mirror found in /etc/apt" >&2; exit 1; }
  echo "$m"
}

in_root() { chroot "$ROOT" /usr/bin/env HOME=/var/lib/rabbitmq "$@"; }

build() {
  [ -x "$ROOT/usr/sbin/rabbitmq-server" ] && return 0
  command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  echo "building a $SUITE root with rabbitmq-server in $ROOT (once)" >&2
  debootstrap --variant=minbase --include=rabbitmq-server "$SUITE" "$ROOT" "$(mirror)" >/dev/null
  in_root true
}

configure() {
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  printf 'NODENAME=%s\nNODE_PORT=%s\nDIST_PORT=%s\n' "$NODE" "$PORT" "$DIST" > "$ROOT/etc/rabbitmq/rabbitmq-env.conf"
  printf 'listeners.tcp.default = 127.0.0.1:%s\nloopback_users = none\n' "$PORT" > "$ROOT/etc/rabbitmq/rabbitmq.conf"
}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

up() {
  build
  configure
  if ! answers; then
    in_root rabbitmq-server -detached >/dev/null 2>&1 || true
    for _ in $(seq 120); do answers && break; sleep 1; done
  fi
  answers || { echo "RabbitMQ 4 did not come up on $PORT; log: $ROOT/var/log/rabbitmq/" >&2; exit 1; }
  in_root rabbitmqctl -q -n "$NODE" await_startup --timeout 120 >/dev/null
  echo "RabbitMQ $(version) on amqp://guest:guest@127.0.0.1:$PORT/" >&2
}

version() { in_root rabbitmqctl -q -n "$NODE" version; }

deprecations() {  # what the broker logged as deprecated since it started
  local found
  found=$(grep -hi 'deprecat' "$ROOT"/var/log/rabbitmq/*.log 2>/dev/null || true)
  [ -z "$found" ] && { echo "no deprecation warnings in the RabbitMQ 4 log" >&2; return 0; }
  echo "$found"; return 1
}

case "${1:-up}" in
  up) up ;;
  url) echo "amqp://guest:guest@127.0.0.1:$PORT/" ;;
  ctl) shift; in_root rabbitmqctl -n "$NODE" "$@" ;;
  version) version ;;
  deprecations) deprecations ;;
  stop) answers && in_root rabbitmqctl -q -n "$NODE" stop || true ;;
  *) sed -n '2,21p' "$0"; exit 2 ;;
esac

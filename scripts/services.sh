#!/usr/bin/env bash
# Makes sure the services the test suite talks to are up: PostgreSQL, Redis, RabbitMQ.
set -uo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Install what is missing (as root on Debian/Ubuntu); otherwise say what to install.
missing=()
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v rabbitmq-server >/dev/null || missing+=(rabbitmq-server)
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "Installing ${missing[*]} ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
  else
    echo "The tests need: ${missing[*]}. Install with: sudo apt-get install -y ${missing[*]}" >&2
  fi
fi

wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done
  echo "service on port $1 did not come up" >&2; return 1
}

if ! port_open 5432; then
  echo "Starting PostgreSQL ..."
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
  else
    echo "PostgreSQL is not installed: apt-get install -y postgresql" >&2; exit 1
  fi
  wait_port 5432 || exit 1
fi

if ! port_open 6379; then
  echo "Starting Redis ..."
  command -v redis-server >/dev/null || { echo "Redis is not installed: apt-get install -y redis-server" >&2; exit 1; }
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379 || exit 1
fi

if ! port_open 5672; then
  if command -v rabbitmq-server >/dev/null; then
    echo "Starting RabbitMQ ..."
    rabbitmq-server -detached
    wait_port 5672 || echo "RabbitMQ did not come up; its broker test will fail" >&2
  fi
fi
exit 0

#!/usr/bin/env bash
# Makes sure the local PostgreSQL, Redis and RabbitMQ that the tests use are running,
# starting each one that is installed but stopped. MongoDB is not needed: the tests
# start SecantusDB (a MongoDB-wire server) themselves.
set -uo pipefail

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then echo "services: $name is up"; return 0; fi
    sleep 1
  done
  echo "services: $name did not come up" >&2
  return 1
}

status=0

if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "services: postgresql is up"
elif command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
  echo "services: starting postgresql"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  wait_for postgresql pg_isready -q -h 127.0.0.1 -p 5432 || status=1
else
  echo "services: PostgreSQL is not installed; set PULSE_TEST_POSTGRES_DSN to a server" >&2
fi

if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
  echo "services: redis is up"
elif command -v redis-server >/dev/null 2>&1; then
  echo "services: starting redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  wait_for redis sh -c 'redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG' || status=1
else
  echo "services: Redis is not installed; set PULSE_TEST_REDIS_URL to a server" >&2
fi

if command -v rabbitmqctl >/dev/null 2>&1; then
  if timeout 20 rabbitmqctl -q status >/dev/null 2>&1; then
    echo "services: rabbitmq is up"
  else
    echo "services: starting rabbitmq"
    rabbitmq-server -detached || true
    wait_for rabbitmq timeout 20 rabbitmqctl -q await_startup || status=1
  fi
else
  echo "services: RabbitMQ is not installed; set PULSE_TEST_AMQP_URL to a server" >&2
fi

exit $status

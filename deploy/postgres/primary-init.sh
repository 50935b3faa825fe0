#!/usr/bin/env bash
# Runs once, when the primary's data directory is first initialised
# (/docker-entrypoint-initdb.d): creates the role and the slot the read replica
# streams from, and lets that role open replication connections over the network.
set -euo pipefail

: "${PG_REPLICATION_USER:?}" "${PG_REPLICATION_PASSWORD:?}" "${PG_REPLICATION_SLOT:?}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v repl_user="$PG_REPLICATION_USER" \
  -v repl_password="$PG_REPLICATION_PASSWORD" \
  -v repl_slot="$PG_REPLICATION_SLOT" <<'SQL'
CREATE ROLE :"repl_user" WITH REPLICATION LOGIN PASSWORD :'repl_password';
-- Reserve WAL now, so nothing the replica needs is recycled before it first connects.
SELECT pg_create_physical_replication_slot(:'repl_slot', true);
SQL

# "host all all all" (added by the image) does not match replication connections.
echo "host replication ${PG_REPLICATION_USER} all scram-sha-256" >> "$PGDATA/pg_hba.conf"

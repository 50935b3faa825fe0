#!/usr/bin/env bash
# Entrypoint of the read replica (runs as the postgres user): on an empty data
# directory, clone the primary with pg_basebackup and write the standby settings (-R),
# then run postgres as a hot standby streaming from the primary's replication slot.
set -euo pipefail

: "${PGDATA:?}" "${PG_PRIMARY_HOST:?}" "${PG_REPLICATION_USER:?}" "${PG_REPLICATION_SLOT:?}"
# pg_basebackup and the WAL receiver both read the password from PGPASSWORD.
: "${PGPASSWORD:?}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "replica: cloning ${PG_PRIMARY_HOST} into ${PGDATA}"
  until pg_basebackup --host="$PG_PRIMARY_HOST" --port="${PG_PRIMARY_PORT:-5432}" \
      --username="$PG_REPLICATION_USER" --pgdata="$PGDATA" \
      --wal-method=stream --slot="$PG_REPLICATION_SLOT" --write-recovery-conf \
      --checkpoint=fast --no-password; do
    echo "replica: primary not ready, retrying in 2 s"
    # A failed attempt may leave a partial copy; pg_basebackup needs an empty directory.
    find "$PGDATA" -mindepth 1 -delete
    sleep 2
  done
  # The volume's mount point may be world-writable; postgres insists on 0700.
  chmod 0700 "$PGDATA"
fi

exec postgres -c hot_standby=on -c hot_standby_feedback=on "$@"

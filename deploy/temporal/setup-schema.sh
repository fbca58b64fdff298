#!/bin/sh
# One-shot job (temporalio/admin-tools): create Temporal's two PostgreSQL databases and bring
# their schemas to the version this admin-tools image ships (it must match the server image).
# Idempotent, so `docker compose up` runs it every time; it also applies the schema updates
# a newer server version needs, before that server starts.
set -eu
: "${TEMPORAL_DB_HOST:?}" "${TEMPORAL_DB_PORT:?}" "${TEMPORAL_DB_USER:?}" "${SQL_PASSWORD:?}"

SCHEMA_DIR=/etc/temporal/schema/postgresql/v12

sql() {
    temporal-sql-tool --plugin postgres12 --ep "$TEMPORAL_DB_HOST" -p "$TEMPORAL_DB_PORT" \
        -u "$TEMPORAL_DB_USER" "$@"
}

setup() {
    db=$1
    dir=$2
    sql --db "$db" create
    # update-schema succeeds on a database that has a schema. Only a fresh one gets
    # setup-schema -v 0.0, which would otherwise reset the recorded version.
    if sql --db "$db" update-schema -d "$dir"; then
        echo "schema of $db is up to date"
    else
        echo "no schema in $db yet: setting it up"
        sql --db "$db" setup-schema -v 0.0
        sql --db "$db" update-schema -d "$dir"
    fi
}

setup temporal "$SCHEMA_DIR/temporal/versioned"
setup temporal_visibility "$SCHEMA_DIR/visibility/versioned"

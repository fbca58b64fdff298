#!/bin/sh
# One-shot job (temporalio/admin-tools): wait until the Temporal cluster serves, create
# zhiping's namespace, register its custom search attributes. Idempotent: what exists is
# left alone, so `docker compose up` runs it every time.
#   NAMESPACE          the namespace (ZHIPING_TEMPORAL_NAMESPACE)
#   RETENTION          how long closed workflows stay visible, e.g. 30d
#   SEARCH_ATTRIBUTES  "Name=Type ..." (workflows/visibility.py; tests/test_compose.py
#                      checks the two lists agree)
set -eu
: "${TEMPORAL_ADDRESS:?}" "${NAMESPACE:?}" "${RETENTION:?}" "${SEARCH_ATTRIBUTES:?}"

attempt=0
until temporal operator cluster health --address "$TEMPORAL_ADDRESS"; do
    attempt=$((attempt + 1))
    if [ "$attempt" -ge 60 ]; then
        echo "Temporal at $TEMPORAL_ADDRESS is not serving after 2 minutes" >&2
        exit 1
    fi
    sleep 2
done

if temporal operator namespace describe --address "$TEMPORAL_ADDRESS" --namespace "$NAMESPACE" >/dev/null 2>&1; then
    echo "namespace $NAMESPACE exists"
else
    temporal operator namespace create --address "$TEMPORAL_ADDRESS" --namespace "$NAMESPACE" \
        --retention "$RETENTION"
fi

# A new namespace takes a few seconds to reach every frontend's cache: retry, bounded.
for pair in $SEARCH_ATTRIBUTES; do
    name=${pair%%=*}
    type=${pair#*=}
    attempt=0
    until temporal operator search-attribute list --address "$TEMPORAL_ADDRESS" \
        --namespace "$NAMESPACE" | grep -Eq "^[[:space:]]*$name[[:space:]]"; do
        attempt=$((attempt + 1))
        if [ "$attempt" -ge 30 ]; then
            echo "could not register search attribute $name ($type)" >&2
            exit 1
        fi
        temporal operator search-attribute create --address "$TEMPORAL_ADDRESS" \
            --namespace "$NAMESPACE" --name "$name" --type "$type" || sleep 2
    done
    echo "search attribute $name ($type) is registered"
done

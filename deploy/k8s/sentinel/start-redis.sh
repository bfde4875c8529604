#!/bin/sh
# One Redis node of the Sentinel topology (docs/high-availability.md), for compose and Kubernetes alike.
#
# A node that (re)starts asks the Sentinels which node is the primary now and starts as its replica, so a
# primary that was killed and failed over comes back as a replica and never as a second primary with stale
# data. Only on the very first start, when no Sentinel knows the service yet, is REDIS_FIRST_PRIMARY the primary.
#
#   SENTINELS            sentinel-1:26379,sentinel-2:26379,sentinel-3:26379
#   REDIS_SERVICE        the Sentinel service name (hubredis)
#   REDIS_FIRST_PRIMARY  the host name of the node that is the primary on the first start
#   REDIS_ANNOUNCE_HOST  this node's host name as the others reach it (default: hostname)
#   REDIS_MAXMEMORY      maxmemory (default 768mb)
#
# Replication settings, and why (the hub's HUB_REDIS_WAIT_REPLICAS=1 relies on them):
#   appendonly yes, appendfsync everysec   every node keeps an AOF: a killed process loses nothing it answered;
#                                          a lost host loses at most ~1 s of what no replica had yet
#   min-replicas-to-write 0                with ONE replica a value of 1 would stop all writes after a failover
#                                          (the new primary has no replica until the old node is back); the hub
#                                          asks for the replica per message with WAIT instead
#   replica-serve-stale-data no, replica-read-only yes   a replica never answers for the primary
#   maxmemory-policy noeviction            never evict queue keys (the hub answers 503 when full)
set -eu
SELF="${REDIS_ANNOUNCE_HOST:-$(hostname)}"
SERVICE="${REDIS_SERVICE:-hubredis}"
PRIMARY=""
for s in $(echo "${SENTINELS:-}" | tr ',' ' '); do
  addr="$(redis-cli -h "${s%:*}" -p "${s##*:}" --raw SENTINEL get-master-addr-by-name "$SERVICE" 2>/dev/null | head -1 || true)"
  if [ -n "$addr" ] && [ "${addr#ERR}" = "$addr" ]; then PRIMARY="$addr"; break; fi
done
[ -n "$PRIMARY" ] || PRIMARY="${REDIS_FIRST_PRIMARY:?set REDIS_FIRST_PRIMARY}"
set -- --port 6379 --dir /data --appendonly yes --appendfsync everysec \
  --maxmemory "${REDIS_MAXMEMORY:-768mb}" --maxmemory-policy noeviction \
  --replica-announce-ip "$SELF" --replica-serve-stale-data no --replica-read-only yes \
  --min-replicas-to-write 0 --repl-diskless-sync yes "$@"
if [ "$PRIMARY" != "$SELF" ]; then
  echo "start-redis: $SELF starts as a replica of $PRIMARY"
  set -- "$@" --replicaof "$PRIMARY" 6379
else
  echo "start-redis: $SELF starts as the primary"
fi
exec redis-server "$@"

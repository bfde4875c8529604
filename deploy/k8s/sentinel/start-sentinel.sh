#!/bin/sh
# One of three Sentinels (docs/high-availability.md). Sentinel rewrites its config file with what it learns
# (replicas, the other Sentinels, the current primary), so the file is written only on the first start and kept
# in /data across restarts.
#
#   REDIS_SERVICE        the service name the hub's redis+sentinel:// URL ends with (hubredis)
#   REDIS_FIRST_PRIMARY  the host name of the first primary (only read on the first start)
#   SENTINEL_ANNOUNCE_HOST  this Sentinel's host name as the others reach it (default: hostname)
#
# Quorum 2 of 3: one Sentinel alone never fails over. down-after-milliseconds 5000: a primary silent for 5 s is
# down (the failover test uses 1 s); failover-timeout 60 s; parallel-syncs 1.
set -eu
CONF=/data/sentinel.conf
SERVICE="${REDIS_SERVICE:-hubredis}"
if [ ! -s "$CONF" ]; then
  cat > "$CONF" <<CONF
port 26379
dir /data
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip ${SENTINEL_ANNOUNCE_HOST:-$(hostname)}
sentinel monitor $SERVICE ${REDIS_FIRST_PRIMARY:?set REDIS_FIRST_PRIMARY} 6379 2
sentinel down-after-milliseconds $SERVICE 5000
sentinel failover-timeout $SERVICE 60000
sentinel parallel-syncs $SERVICE 1
CONF
fi
exec redis-server "$CONF" --sentinel

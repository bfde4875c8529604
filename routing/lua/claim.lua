-- claim: ARGV[4] max_items, [5] max_inflight, [6] lease_seconds, [7] scan_limit (tokens popped at most),
-- [8] expired_cap (expired messages dropped at most).
-- Returns a list of {expired 0|1, id, receiver, group, kind, payload, deadline, origin, attempts,
-- enqueued_at}. Expired entries were already removed from the queue: report them, do not deliver or ack.
local max_items, max_inflight = tonumber(ARGV[4]), tonumber(ARGV[5])
local lease_seconds, scan_limit, expired_cap = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])

reap_due(max_items)

local out = {}
local leased, scanned, dropped, stop = 0, 0, 0, false
while leased < max_items and scanned < scan_limit and not stop do
  local token = redis.call('LPOP', READY)
  if not token then break end
  scanned = scanned + 1
  local state = redis.call('HGET', GSTATE, token)
  if state == 'r' or state == 'u' then
    local gkey = group_key(token)
    local receiver = nil
    while true do
      local id = redis.call('LINDEX', gkey, 0)
      if not id then
        -- every message of the group expired; a reserved slot goes on to the next parked group
        redis.call('HDEL', GSTATE, token)
        if state == 'u' and receiver then release_slot(receiver, parked_key(receiver)) end
        break
      end
      local mkey = message_key(id)
      local f = redis.call('HMGET', mkey, 'receiver', 'group', 'kind', 'payload', 'deadline', 'origin',
        'attempts', 'enqueued_at')
      if not f[1] then
        redis.call('LPOP', gkey) -- dangling id without message: drop it
      elseif expired(f[5]) then
        if dropped >= expired_cap then
          redis.call('LPUSH', READY, token) -- state unchanged; the next claim continues here
          stop = true
          break
        end
        receiver = f[1]
        remove_message(id, mkey, gkey, pending_key(receiver))
        dropped = dropped + 1
        out[#out + 1] = {1, id, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]}
      else
        receiver = f[1]
        if state == 'r' then
          local inflight = tonumber(redis.call('HGET', INFLIGHT, receiver) or '0')
          if inflight >= max_inflight then
            redis.call('HSET', GSTATE, token, 'p')
            redis.call('RPUSH', parked_key(receiver), token)
            break
          end
          redis.call('HINCRBY', INFLIGHT, receiver, 1)
        end
        local attempts = lease(mkey, id, token, lease_seconds, f[5])
        leased = leased + 1
        out[#out + 1] = {0, id, f[1], f[2], f[3], f[4], f[5], f[6], attempts, f[8]}
        break
      end
    end
  end
end
-- Wake others only for work this call leaves behind: groups it made ready (hand-overs, reaped leases) or
-- stopped early on. What it took itself needs nobody.
if (woken > 0 or stop or scanned >= scan_limit) and redis.call('LLEN', READY) > 0 then
  redis.call('PUBLISH', WAKE, 1)
end
return out

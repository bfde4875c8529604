-- purge_receiver: KEYS[5] pending zset, [6] parked list, [7] receivers set, [8] per-receiver dead-letter
-- zset. ARGV[4] receiver. Drops every unacked message of the receiver (queued, leased, waiting for a
-- retry) in one step; O(messages of that receiver). Tokens of its groups still in the ready list become
-- stale (no state) and claim skips them. Dead letters stay (operators delete them). Returns the count.
local receiver = ARGV[4]
local ids = redis.call('ZRANGE', KEYS[5], 0, -1)
local seen = {}
for _, id in ipairs(ids) do
  local mkey = message_key(id)
  local token = redis.call('HGET', mkey, 'token')
  if token and not seen[token] then
    seen[token] = true
    redis.call('HDEL', GSTATE, token)
    redis.call('DEL', group_key(token))
  end
  redis.call('DEL', mkey)
  redis.call('ZREM', LEASES, id)
end
redis.call('DEL', KEYS[5], KEYS[6])
redis.call('HDEL', INFLIGHT, receiver)
if redis.call('ZCARD', KEYS[8]) == 0 then redis.call('SREM', KEYS[7], receiver) end
return #ids

-- hasten: KEYS[5] pending zset of one receiver. ARGV[4] how many of its oldest messages to look at.
-- The receiver answers again: its messages waiting for a retry (in the lease set, no live lease) are due now,
-- so they go out at the next claim instead of at the end of a backoff of up to minutes, holding the receiver's
-- in-flight slots all that time. Returns how many it made due.
local n = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[5], 0, tonumber(ARGV[4]) - 1)) do
  local due = redis.call('ZSCORE', LEASES, id)
  if due and tonumber(due) > NOW and not redis.call('HGET', message_key(id), 'lease') then
    redis.call('ZADD', LEASES, NOW, id)
    n = n + 1
  end
end
if n > 0 then redis.call('PUBLISH', WAKE, n) end
return n

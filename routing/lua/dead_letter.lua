-- dead_letter: KEYS[5] message, KEYS[6] group list, KEYS[7] pending zset, KEYS[8] parked list,
-- KEYS[9] dead-letter hash, KEYS[10] dead-letter zset, KEYS[11] per-receiver dead-letter zset.
-- ARGV[4] id, [5] attempts, [6] token, [7] receiver, [8] reason.
-- Like ack, plus a copy of the message in the dead-letter store. Returns 1, or 0 without lease.
local mkey, gkey, id, token, receiver = KEYS[5], KEYS[6], ARGV[4], ARGV[6], ARGV[7]
if not holds_lease(mkey, id, ARGV[5], token) then return 0 end
local f = redis.call('HMGET', mkey, 'group', 'kind', 'payload', 'deadline', 'origin', 'attempts',
  'enqueued_at')
redis.call('DEL', KEYS[9])
redis.call('HSET', KEYS[9], 'id', id, 'receiver', receiver, 'group', f[1], 'kind', f[2], 'payload', f[3],
  'deadline', f[4], 'origin', f[5], 'attempts', f[6], 'enqueued_at', f[7], 'reason', ARGV[8],
  'time', ARGV[2])
redis.call('ZADD', KEYS[10], ARGV[2], id)
redis.call('ZADD', KEYS[11], ARGV[2], id)
remove_message(id, mkey, gkey, KEYS[7])
end_lease(token, gkey, receiver, KEYS[8])
wake()
return 1

-- dead_letter: KEYS[5] message, KEYS[6] group list, KEYS[7] pending zset, KEYS[8] parked list,
-- KEYS[9] dead-letter hash, KEYS[10] dead-letter zset, KEYS[11] per-receiver dead-letter zset,
-- KEYS[12] dead-letter bytes hash, KEYS[13] evicted-count hash.
-- ARGV[4] id, [5] attempts, [6] token, [7] receiver, [8] reason, [9] max count, [10] max bytes (per receiver),
-- [11] ttl seconds, [12] evictions per call at most.
-- Like ack, plus a copy of the message in the dead-letter store, then the receiver's dead letters are expired and
-- capped (oldest first, the new one included if it alone is over the byte cap).
-- Returns {1, capped, expired}, or {0, 0, 0} without lease.
local mkey, gkey, id, token, receiver = KEYS[5], KEYS[6], ARGV[4], ARGV[6], ARGV[7]
if not holds_lease(mkey, ARGV[5], token) then return {0, 0, 0} end
local f = redis.call('HMGET', mkey, 'group', 'kind', 'payload', 'deadline', 'origin', 'attempts',
  'enqueued_at')
local size = string.len(f[3] or '') + string.len(ARGV[8])
drop_dead_letter(id, receiver, KEYS[10], KEYS[11], KEYS[12]) -- a record of an earlier life of this id
redis.call('HSET', KEYS[9], 'id', id, 'receiver', receiver, 'group', f[1], 'kind', f[2], 'payload', f[3],
  'deadline', f[4], 'origin', f[5], 'attempts', f[6], 'enqueued_at', f[7], 'reason', ARGV[8],
  'time', ARGV[2], 'size', size)
redis.call('ZADD', KEYS[10], ARGV[2], id)
redis.call('ZADD', KEYS[11], ARGV[2], id)
redis.call('HINCRBY', KEYS[12], receiver, size)
remove_message(id, mkey, gkey, KEYS[7])
end_lease(token, gkey, receiver, KEYS[8])
local capped, expired = trim_dead_letters(receiver, KEYS[10], KEYS[11], KEYS[12], KEYS[13], tonumber(ARGV[9]),
  tonumber(ARGV[10]), NOW - tonumber(ARGV[11]), tonumber(ARGV[12]))
wake()
return {1, capped, expired}

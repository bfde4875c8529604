-- replay_dead_letter: KEYS[5] dead-letter hash, [6] dead-letter zset, [7] per-receiver dead-letter zset,
-- [8] message, [9] group list, [10] pending zset, [11] receivers set, [12] parked list, [13] dead-letter bytes.
-- ARGV[4] id, [5] receiver, [6] group, [7] token, [8] deadline, [9] max_inflight.
-- The caller read the record first to name the keys; the record must still be there and match.
-- Re-enqueues with attempts 0, the new deadline, enqueued_at = now and no origin (nobody waits for it).
-- Returns {kind, payload}, or false when the record is gone or the id is queued again already.
local dkey, mkey, gkey, id = KEYS[5], KEYS[8], KEYS[9], ARGV[4]
local d = redis.call('HMGET', dkey, 'receiver', 'group', 'kind', 'payload')
if d[1] ~= ARGV[5] or d[2] ~= ARGV[6] then return false end
if redis.call('EXISTS', mkey) == 1 then return false end
drop_dead_letter(id, ARGV[5], KEYS[6], KEYS[7], KEYS[13])
redis.call('HSET', mkey, 'receiver', ARGV[5], 'group', ARGV[6], 'token', ARGV[7], 'kind', d[3],
  'payload', d[4], 'deadline', ARGV[8], 'origin', '', 'enqueued_at', ARGV[2], 'attempts', 0)
local n = redis.call('RPUSH', gkey, id)
redis.call('ZADD', KEYS[10], math.floor(NOW), id) -- whole seconds (lib.lua)
redis.call('SADD', KEYS[11], ARGV[5])
if n == 1 then
  start_group(group_start(ARGV[5], false, ARGV[8], tonumber(ARGV[9])), id, ARGV[7], ARGV[5], KEYS[12], ARGV[8], 0)
end
wake()
return {d[3], d[4]}

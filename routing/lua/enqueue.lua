-- enqueue: KEYS[5] message, KEYS[6] group list, KEYS[7] pending zset, KEYS[8] receivers set,
-- KEYS[9] parked list.
-- ARGV[4] id, [5] receiver, [6] group, [7] token, [8] kind, [9] payload, [10] deadline, [11] origin,
-- [12] enqueued_at, [13] claim 0|1, [14] max_inflight, [15] lease_seconds.
-- Returns 1 = leased to the caller, 0 = queued, -1 = id already queued (nothing changed).
local mkey, gkey, id = KEYS[5], KEYS[6], ARGV[4]
if redis.call('EXISTS', mkey) == 1 then return -1 end
local start = nil -- a group that already has messages is going: nothing to start
if redis.call('RPUSH', gkey, id) == 1 then
  start = group_start(ARGV[5], ARGV[13] == '1', ARGV[10], tonumber(ARGV[14]))
end
-- leased to the caller: claim number 1, written with the message
local claimed = start == 'l' and {'attempts', 1, 'lease', 1} or {'attempts', 0}
redis.call('HSET', mkey, 'receiver', ARGV[5], 'group', ARGV[6], 'token', ARGV[7], 'kind', ARGV[8],
  'payload', ARGV[9], 'deadline', ARGV[10], 'origin', ARGV[11], 'enqueued_at', ARGV[12], unpack(claimed))
redis.call('ZADD', KEYS[7], math.floor(tonumber(ARGV[12])), id) -- whole seconds (lib.lua)
redis.call('SADD', KEYS[8], ARGV[5])
if start then start_group(start, id, ARGV[7], ARGV[5], KEYS[9], ARGV[10], tonumber(ARGV[15])) end
wake()
if start == 'l' then return 1 end
return 0

-- busy: KEYS[5] receivers set, KEYS[6] dead-letter bytes hash. ARGV[4] SSCAN cursor, ARGV[5] slice size.
-- One slice of the receivers set: the next cursor ('0' once the scan is done), then for each receiver with
-- anything unacked, in flight or dead-lettered: receiver, depth, oldest enqueued_at ('' if none), in flight, dead
-- letters, dead-letter bytes. Idle receivers stay in Redis (a few O(1) reads each): the queue gauges every process
-- refreshes cost it O(busy receivers), not O(every receiver ever routed to), and each call holds Redis one slice.
local scan = redis.call('SSCAN', KEYS[5], ARGV[4], 'COUNT', tonumber(ARGV[5]))
local out = {scan[1]}
for _, receiver in ipairs(scan[2]) do
  local pending = pending_key(receiver)
  local depth = redis.call('ZCARD', pending)
  local inflight = tonumber(redis.call('HGET', INFLIGHT, receiver) or '0')
  local dead = redis.call('ZCARD', BASE .. 'dead-of:' .. receiver)
  if depth > 0 or inflight > 0 or dead > 0 then
    out[#out + 1] = receiver
    out[#out + 1] = depth
    out[#out + 1] = oldest_enqueued_at(pending) or ''
    out[#out + 1] = inflight
    out[#out + 1] = dead
    out[#out + 1] = tonumber(redis.call('HGET', KEYS[6], receiver) or '0')
  end
end
return out

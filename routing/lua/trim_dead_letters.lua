-- trim_dead_letters: KEYS[5] receivers set, [6] dead-letter zset, [7] dead-letter bytes hash,
-- [8] evicted-count hash. ARGV[4] max count, [5] max bytes (per receiver), [6] ttl seconds, [7] evictions per
-- receiver and call at most.
-- The periodic sweep: dead letters past their TTL leave the record and both indexes even when no new dead
-- letter arrives for their receiver, and a lowered cap takes effect. O(receivers) plus what it removes.
-- Returns a flat list {receiver, capped, expired, ...} of the receivers that lost any.
local out = {}
local cutoff, limit = NOW - tonumber(ARGV[6]), tonumber(ARGV[7])
for _, receiver in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  local capped, expired = trim_dead_letters(receiver, KEYS[6], dead_of_key(receiver), KEYS[7], KEYS[8],
    tonumber(ARGV[4]), tonumber(ARGV[5]), cutoff, limit)
  if capped + expired > 0 then
    out[#out + 1] = receiver
    out[#out + 1] = capped
    out[#out + 1] = expired
  end
end
return out

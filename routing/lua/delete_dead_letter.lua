-- delete_dead_letter: KEYS[5] dead-letter hash, [6] dead-letter zset, [7] per-receiver dead-letter zset,
-- [8] dead-letter bytes hash. ARGV[4] id, [5] receiver. Returns 1 if the record existed.
local n = redis.call('EXISTS', KEYS[5])
drop_dead_letter(ARGV[4], ARGV[5], KEYS[6], KEYS[7], KEYS[8])
return n

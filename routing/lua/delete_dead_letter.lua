-- delete_dead_letter: KEYS[5] dead-letter hash, [6] dead-letter zset, [7] per-receiver dead-letter zset.
-- ARGV[4] id. Returns 1 if the record existed.
local n = redis.call('DEL', KEYS[5])
redis.call('ZREM', KEYS[6], ARGV[4])
redis.call('ZREM', KEYS[7], ARGV[4])
return n

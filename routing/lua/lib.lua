-- Shared prelude of every delivery-queue script; routing/queue.py prepends it to each script body.
--
-- Calling convention (all scripts):
--   KEYS[1] ready list, KEYS[2] group-state hash, KEYS[3] leases zset, KEYS[4] in-flight hash,
--   KEYS[5..] script specific.
--   ARGV[1] key base "{prefix}:", ARGV[2] now (unix seconds, caller's clock), ARGV[3] wake channel,
--   ARGV[4..] script specific.
--
-- Keys that can only be known inside Redis (a token popped from the ready list, a message id popped from
-- the lease set) are derived here as BASE .. kind .. ':' .. suffix, exactly like routing/keys.py builds
-- them: m:<id>, q:<token>, parked:<receiver>, pending:<receiver>. All of them carry the {prefix} hash tag,
-- so they live in the same cluster slot as the declared keys.
--
-- Group states (GSTATE hash, token -> state; no field = group empty):
--   r  ready: token is in the ready list, head not leased
--   u  ready with an in-flight slot already reserved for it (handed over by a finished group, or kept
--      by a group whose lease expired or whose retry is due)
--   p  parked: token is in parked:<receiver>, waiting for a slot
--   l  leased: head message is in the lease set (also while it waits for a retry)
-- A token whose state does not match the list it was popped from is stale (duplicate left behind by a
-- purge) and is skipped.

local READY, GSTATE, LEASES, INFLIGHT = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local BASE, NOW, WAKE = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local woken = 0

-- The two sorted sets every routed request writes to have whole-second scores: pending:<receiver> (enqueued_at
-- rounded down; ties go by id, which is time-ordered; the exact time is the message's enqueued_at field, see
-- oldest_enqueued_at) and the lease set (the expiry rounded up: a lease never ends early). Redis keeps a small
-- sorted set as a listpack and, to insert, reads the score of every entry before the new one, parsing each that
-- is not an integer as a double: 9 µs per ZADD at 40 entries, against 2 µs with integer scores
-- (bench/queue_redis_cpu.py). Retries and hastened leases keep exact scores (a few, rarely).
local function message_key(id) return BASE .. 'm:' .. id end
local function group_key(token) return BASE .. 'q:' .. token end
local function parked_key(receiver) return BASE .. 'parked:' .. receiver end
local function pending_key(receiver) return BASE .. 'pending:' .. receiver end

-- When the oldest unacked message of a pending zset was enqueued, exactly, or nil when there is none.
local function oldest_enqueued_at(pending)
  local first = redis.call('ZRANGE', pending, 0, 0, 'WITHSCORES')
  if not first[1] then return nil end
  return redis.call('HGET', message_key(first[1]), 'enqueued_at') or first[2]
end

local function expired(deadline)
  deadline = tonumber(deadline) or 0
  return deadline > 0 and deadline <= NOW
end

-- Publish once per script call if anything became claimable, so idle dispatchers everywhere wake up.
local function wake()
  if woken > 0 then redis.call('PUBLISH', WAKE, woken) end
end

-- True when (attempts, token) is the live lease of the message at mkey: the lease was granted by claim number
-- `attempts` and belongs to `token`. The field is set only with the message's entry in the lease set (lease,
-- enqueue) and cleared whenever that entry stops being a lease (reap_due, retry_later; ack, dead_letter and purge
-- delete the message), so the field alone tells, without a ZSCORE.
local function holds_lease(mkey, attempts, token)
  local m = redis.call('HMGET', mkey, 'lease', 'token')
  return m[1] == attempts and m[2] == token
end

-- Put a leased group head in the lease set and the group in state l. A message with a deadline is leased until one
-- second past it at most (rounded up to the whole second, as every lease: see pending:<receiver> above on why
-- scores are whole seconds): nobody forwards it after its deadline, so a lease whose holder is gone (a process
-- killed, or a claim Redis ran after its caller had given up on a frozen Redis) holds the group no longer than the
-- message could have lived anyway. The caller has accounted the in-flight slot and set the message's fields.
local function hold(id, token, lease_seconds, deadline)
  local expiry, d = NOW + lease_seconds, tonumber(deadline) or 0
  if d > 0 and d + 1 < expiry then expiry = d + 1 end
  redis.call('ZADD', LEASES, math.ceil(expiry), id)
  redis.call('HSET', GSTATE, token, 'l')
end

-- Lease a queued group head: claim number attempts+1; the caller has already accounted the in-flight slot.
local function lease(mkey, id, token, lease_seconds, deadline)
  local attempts = redis.call('HINCRBY', mkey, 'attempts', 1)
  redis.call('HSET', mkey, 'lease', attempts)
  hold(id, token, lease_seconds, deadline)
  return attempts
end

-- Give up one in-flight slot of `receiver`. If a group of that receiver is parked, the slot goes straight
-- to it (state u, front of the ready list) and the counter stays: nothing can grab the slot in between, so
-- parked groups are served in order and cannot be starved by newly ready groups.
local function release_slot(receiver, parked)
  while true do
    local token = redis.call('LPOP', parked)
    if not token then
      if redis.call('HINCRBY', INFLIGHT, receiver, -1) <= 0 then redis.call('HDEL', INFLIGHT, receiver) end
      return
    end
    if redis.call('HGET', GSTATE, token) == 'p' then
      redis.call('HSET', GSTATE, token, 'u')
      redis.call('LPUSH', READY, token)
      woken = woken + 1
      return
    end
  end
end

-- The head of a group was finished (ack, dead letter): free the slot and make the group ready again if it
-- has more messages. It goes to the back of the ready list and, if parked groups got the slot, behind
-- them: a deep group cannot keep a slot to itself.
local function end_lease(token, gkey, receiver, parked)
  release_slot(receiver, parked)
  if redis.call('EXISTS', gkey) == 1 then
    redis.call('HSET', GSTATE, token, 'r')
    redis.call('RPUSH', READY, token)
    woken = woken + 1
  else
    redis.call('HDEL', GSTATE, token)
  end
end

-- Delete an acked/dead-lettered/expired message everywhere. It is the group head, so LREM stops at once.
local function remove_message(id, mkey, gkey, pkey)
  redis.call('LREM', gkey, 1, id)
  redis.call('DEL', mkey)
  redis.call('ZREM', pkey, id)
  redis.call('ZREM', LEASES, id)
end

-- How a message that became the head of an empty group starts: 'l' leased right away to the caller
-- (claim-on-enqueue), 'p' parked (the receiver has no free slot) or 'r' ready. Decided before the message's fields
-- are written, so a leased one is written with its lease in the same HSET (start_group then does the rest).
local function group_start(receiver, claim, deadline, max_inflight)
  local inflight = tonumber(redis.call('HGET', INFLIGHT, receiver) or '0')
  if inflight >= max_inflight then return 'p' end
  if claim and not expired(deadline) then return 'l' end
  return 'r'
end

-- Start a group as group_start decided; for 'l' the message already has attempts 1 and lease 1.
local function start_group(start, id, token, receiver, parked, deadline, lease_seconds)
  if start == 'l' then
    redis.call('HINCRBY', INFLIGHT, receiver, 1)
    hold(id, token, lease_seconds, deadline)
  elseif start == 'p' then
    redis.call('HSET', GSTATE, token, 'p')
    redis.call('RPUSH', parked, token)
  else
    redis.call('HSET', GSTATE, token, 'r')
    redis.call('RPUSH', READY, token)
    woken = woken + 1
  end
end

-- Put back up to `limit` groups whose lease expired (holder died) or whose retry delay is over. The group
-- keeps its in-flight slot (state u, front of the ready list): its head was in progress and is the next
-- thing of that receiver to go out again, ahead of parked groups.
local function reap_due(limit)
  local ids = redis.call('ZRANGEBYSCORE', LEASES, '-inf', NOW, 'LIMIT', 0, limit)
  for _, id in ipairs(ids) do
    redis.call('ZREM', LEASES, id)
    local mkey = message_key(id)
    local token = redis.call('HGET', mkey, 'token')
    if token then
      redis.call('HDEL', mkey, 'lease')
      redis.call('HSET', GSTATE, token, 'u')
      redis.call('LPUSH', READY, token)
      woken = woken + 1
    end
  end
  return #ids
end

-- Dead letters -------------------------------------------------------------------------------------------
-- Record dl:<id> has a 'size' field (payload + reason bytes); DEAD_BYTES[receiver] sums them, so the byte cap
-- needs no scan. Index scores are the time of dead-lettering: the TTL counts from there.
local function dead_letter_key(id) return BASE .. 'dl:' .. id end
local function dead_of_key(receiver) return BASE .. 'dead-of:' .. receiver end

-- Remove one dead letter everywhere: its record, both indexes and its bytes.
local function drop_dead_letter(id, receiver, dead, dead_of, dead_bytes)
  local dkey = dead_letter_key(id)
  local size = tonumber(redis.call('HGET', dkey, 'size') or '0') or 0
  redis.call('DEL', dkey)
  redis.call('ZREM', dead, id)
  redis.call('ZREM', dead_of, id)
  if size > 0 and redis.call('HINCRBY', dead_bytes, receiver, -size) <= 0 then
    redis.call('HDEL', dead_bytes, receiver)
  end
end

-- Expire (older than `cutoff`) and cap (count, bytes) the dead letters of one receiver, oldest first, at most
-- `limit` of each per call (a lowered cap converges over a few calls instead of blocking Redis). Evictions are
-- added to EVICTED[receiver]. Returns capped, expired.
local function trim_dead_letters(receiver, dead, dead_of, dead_bytes, evicted, max_count, max_bytes, cutoff, limit)
  local expired = 0
  local old = redis.call('ZRANGEBYSCORE', dead_of, '-inf', '(' .. cutoff, 'LIMIT', 0, limit)
  for _, id in ipairs(old) do
    drop_dead_letter(id, receiver, dead, dead_of, dead_bytes)
    expired = expired + 1
  end
  local capped = 0
  while capped < limit do
    local n = redis.call('ZCARD', dead_of)
    if n == 0 then break end
    local bytes = tonumber(redis.call('HGET', dead_bytes, receiver) or '0') or 0
    if n <= max_count and bytes <= max_bytes then break end
    drop_dead_letter(redis.call('ZRANGE', dead_of, 0, 0)[1], receiver, dead, dead_of, dead_bytes)
    capped = capped + 1
  end
  if capped + expired > 0 then redis.call('HINCRBY', evicted, receiver, capped + expired) end
  if redis.call('ZCARD', dead_of) == 0 then redis.call('HDEL', dead_bytes, receiver) end -- no drift survives
  return capped, expired
end

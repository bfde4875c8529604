-- unpark: KEYS[5] receivers set. ARGV[4] max_inflight. The in-flight limit rose (another hub process came up):
-- every receiver under it gets parked groups handed the new slots in their order (state u, front of the ready
-- list), as release_slot does when a slot frees. O(receivers + groups moved). Returns how many groups it moved.
local max_inflight = tonumber(ARGV[4])
local handed = {}
for _, receiver in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  local parked = parked_key(receiver)
  local inflight = tonumber(redis.call('HGET', INFLIGHT, receiver) or '0')
  while inflight < max_inflight do
    local token = redis.call('LPOP', parked)
    if not token then break end
    if redis.call('HGET', GSTATE, token) == 'p' then
      redis.call('HSET', GSTATE, token, 'u')
      redis.call('HINCRBY', INFLIGHT, receiver, 1)
      inflight = inflight + 1
      handed[#handed + 1] = token
    end
  end
end
for i = #handed, 1, -1 do  -- the first one handed over ends up first in line
  redis.call('LPUSH', READY, handed[i])
end
woken = woken + #handed
wake()
return #handed

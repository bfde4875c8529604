-- retry_later: KEYS[5] message. ARGV[4] id, [5] attempts, [6] token, [7] retry at (unix seconds).
-- The group stays leased (state l, slot kept) so nothing overtakes the message; the lease entry now
-- means "due again at ARGV[7]" and reap_due puts the group back then. Returns 1, or 0 without lease.
local mkey, id = KEYS[5], ARGV[4]
if not holds_lease(mkey, ARGV[5], ARGV[6]) then return 0 end
redis.call('HDEL', mkey, 'lease')
redis.call('ZADD', LEASES, ARGV[7], id)
return 1

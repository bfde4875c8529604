-- ack: KEYS[5] message, KEYS[6] group list, KEYS[7] pending zset, KEYS[8] parked list.
-- ARGV[4] id, [5] attempts (the claim that granted the lease), [6] token, [7] receiver.
-- Returns 1, or 0 when the caller no longer holds the lease (reaped, purged, retry_later, acked).
local mkey, gkey, id, token, receiver = KEYS[5], KEYS[6], ARGV[4], ARGV[6], ARGV[7]
if not holds_lease(mkey, ARGV[5], token) then return 0 end
remove_message(id, mkey, gkey, KEYS[7])
end_lease(token, gkey, receiver, KEYS[8])
wake()
return 1

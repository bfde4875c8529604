-- reap: ARGV[4] batch size. Returns how many due lease entries were handled (expired leases and retries
-- whose delay is over); the caller repeats while a full batch came back.
local n = reap_due(tonumber(ARGV[4]))
wake()
return n

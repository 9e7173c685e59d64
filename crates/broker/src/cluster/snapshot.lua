-- The room as it stands and the log position it stands at, in one step:
-- the members' owners in join order, after the log's last id and sequence.
local last = redis.call('XREVRANGE', LOG, '+', '-', 'COUNT', 1)[1]
local out = { last and last[1] or '0-0', redis.call('HGET', COUNTERS, 'seq') or '0' }
for _, key in ipairs(redis.call('ZRANGE', SEATS, 0, -1)) do
  out[#out + 1] = redis.call('HGET', OWNERS, key) or ''
end
return out

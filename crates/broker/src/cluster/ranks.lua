-- Queue positions (1-based, 0 when not queued) of the given name keys,
-- after the queue's length. ARGV: 5.. name keys.
local out = { tostring(redis.call('ZCARD', QUEUE)) }
for i = 5, #ARGV do
  local rank = redis.call('ZRANK', QUEUE, ARGV[i])
  out[#out + 1] = tostring(rank and rank + 1 or 0)
end
return out

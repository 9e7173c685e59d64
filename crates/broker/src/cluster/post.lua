-- A member's message: the next message id, appended to the log in the one
-- order every node delivers. ARGV: 5 name key, 6 owner, 7 text, 8 ts.
if not owns(ARGV[5], ARGV[6]) or not redis.call('ZSCORE', SEATS, ARGV[5]) then
  return { 'gone' }
end
local id = redis.call('HINCRBY', COUNTERS, 'msg', 1)
emit({ 'k', 'm', 'o', ARGV[6], 't', ARGV[7], 'ts', ARGV[8], 'i', tostring(id) })
return { 'ok', tostring(id) }

-- Admission of a connection that claimed its name: a seat if one is free
-- and nobody waits, else the back of the queue, else refused (and the
-- name released). ARGV: 5 name key, 6 owner, 7 max_waiting.
if not alive() then
  return { 'gone' }
end
local key, owner = ARGV[5], ARGV[6]
if not owns(key, owner) then
  return { 'lost' }
end
if redis.call('ZCARD', SEATS) < MAX_ACTIVE and redis.call('ZCARD', QUEUE) == 0 then
  redis.call('ZADD', SEATS, redis.call('HINCRBY', COUNTERS, 'join', 1), key)
  emit({ 'k', 'j', 'o', owner, 'q', '0' })
  return { 'admitted' }
end
local waiting = redis.call('ZCARD', QUEUE)
if waiting < tonumber(ARGV[7]) then
  redis.call('ZADD', QUEUE, redis.call('HINCRBY', COUNTERS, 'ticket', 1), key)
  return { 'queued', tostring(waiting + 1) }
end
release(key)
return { 'full' }

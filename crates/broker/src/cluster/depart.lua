-- A connection is gone: its name is released, a member's seat goes to the
-- head of the queue. ARGV: 5 name key, 6 owner, 7 reason.
local key, owner = ARGV[5], ARGV[6]
if not owns(key, owner) then
  return { 'unknown' }
end
release(key)
if redis.call('ZREM', SEATS, key) == 1 then
  emit({ 'k', 'l', 'o', owner, 'r', ARGV[7] })
  promote()
  return { 'member' }
end
if redis.call('ZREM', QUEUE, key) == 1 then
  return { 'queued' }
end
return { 'claimed' }

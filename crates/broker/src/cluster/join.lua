-- A node joins: its configuration must agree with the live nodes' (the
-- first live node sets it), and whatever an earlier run under the same
-- node id still holds is released. ARGV: 5 max_waiting, 6 store, 7 a new
-- epoch, used if the cluster has none or if 8 is '1' (Redis lost writes),
-- 9 the last message id in this node's store: ids continue after it, 10
-- the epoch this node knew.
local agreed = { 'max_active', ARGV[3], 'max_waiting', ARGV[5], 'store', ARGV[6] }
local others = redis.call('ZCARD', NODES)
if alive() then
  others = others - 1
end
if others > 0 then
  for i = 1, #agreed, 2 do
    local theirs = redis.call('HGET', CONFIG, agreed[i])
    if theirs and theirs ~= agreed[i + 1] then
      return { 'mismatch', agreed[i], theirs }
    end
  end
end
redis.call('HSET', CONFIG, unpack(agreed))
drop_node(NODE)
promote()
-- A new epoch only once per loss: the first node to see it replaces the
-- epoch it knew (10); the others then find it changed and adopt it.
local current = redis.call('GET', EPOCH)
if not current or (ARGV[8] == '1' and current == ARGV[10]) then
  redis.call('SET', EPOCH, ARGV[7])
end
if tonumber(redis.call('HGET', COUNTERS, 'msg') or '0') < tonumber(ARGV[9]) then
  redis.call('HSET', COUNTERS, 'msg', ARGV[9])
end
redis.call('ZADD', NODES, NOW + LEASE, NODE)
return { 'ok', redis.call('GET', EPOCH) }

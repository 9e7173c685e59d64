-- Renews this node's lease (every node's seats and places live as long as
-- it), and reports the epoch, the live nodes and the log's sequence.
if not alive() then
  return { 'gone' }
end
redis.call('ZADD', NODES, NOW + LEASE, NODE)
return {
  'ok',
  redis.call('GET', EPOCH) or '',
  tostring(redis.call('ZCARD', NODES)),
  redis.call('HGET', COUNTERS, 'seq') or '0',
}

-- Shared by every cluster script: the keys, Redis's own clock, the log and
-- the release of nodes whose lease ran out. Each script starts with
-- `reap()`, so a dead node's seats and places are freed by whichever
-- script runs first, atomically with its own work.
--
-- KEYS: 1 seats (zset: name key -> join order), 2 queue (zset: name key ->
-- ticket), 3 owners (hash: name key -> owner), 4 nodes (zset: node -> lease
-- expiry, ms), 5 counters (hash), 6 log (stream), 7 config (hash), 8 epoch.
-- ARGV: 1 node, 2 lease (ms), 3 max_active, 4 log length, then the script's.
-- An owner is "node|conn|flags|display name".

local SEATS, QUEUE, OWNERS, NODES = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local COUNTERS, LOG, CONFIG, EPOCH = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local NODE, LEASE = ARGV[1], tonumber(ARGV[2])
local MAX_ACTIVE, LOG_LEN = tonumber(ARGV[3]), ARGV[4]
local PREFIX = string.sub(NODES, 1, #NODES - #'nodes')
local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function names_of(node)
  return PREFIX .. 'node:' .. node
end

local function emit(fields)
  local seq = redis.call('HINCRBY', COUNTERS, 'seq', 1)
  return redis.call('XADD', LOG, 'MAXLEN', '~', LOG_LEN, '*', 's', seq, unpack(fields))
end

-- Fills free seats from the head of the queue.
local function promote()
  while redis.call('ZCARD', SEATS) < MAX_ACTIVE do
    local head = redis.call('ZRANGE', QUEUE, 0, 0)[1]
    if not head then
      break
    end
    redis.call('ZREM', QUEUE, head)
    redis.call('ZADD', SEATS, redis.call('HINCRBY', COUNTERS, 'join', 1), head)
    emit({ 'k', 'j', 'o', redis.call('HGET', OWNERS, head) or '', 'q', '1' })
  end
end

-- Releases everything `node` holds: its members leave as disconnected.
local function drop_node(node)
  redis.call('ZREM', NODES, node)
  local set = names_of(node)
  for _, key in ipairs(redis.call('SMEMBERS', set)) do
    local owner = redis.call('HGET', OWNERS, key)
    redis.call('HDEL', OWNERS, key)
    if redis.call('ZREM', SEATS, key) == 1 then
      emit({ 'k', 'l', 'o', owner or '', 'r', 'disconnected' })
    else
      redis.call('ZREM', QUEUE, key)
    end
  end
  redis.call('DEL', set)
  redis.call('DEL', PREFIX .. 'inbox:' .. node)
end

local function reap()
  local dead = redis.call('ZRANGEBYSCORE', NODES, '-inf', NOW)
  for _, node in ipairs(dead) do
    drop_node(node)
  end
  if #dead > 0 then
    promote()
  end
end

-- Whether `key` is held by `owner` (this node's connection).
local function owns(key, owner)
  return redis.call('HGET', OWNERS, key) == owner
end

local function release(key)
  redis.call('HDEL', OWNERS, key)
  redis.call('SREM', names_of(NODE), key)
end

reap()

-- Whether this node still holds its lease: a node that lost it has been
-- released above and must start over before it acts again.
local function alive()
  return redis.call('ZSCORE', NODES, NODE) ~= false
end

-- A direct message to a member on another node, through that node's inbox.
-- ARGV: 5 recipient's name key, 6 sender's display name, 7 text, 8 ts.
local owner = redis.call('HGET', OWNERS, ARGV[5])
if not owner or not redis.call('ZSCORE', SEATS, ARGV[5]) then
  return { 'gone' }
end
local node = string.match(owner, '^([^|]*)')
redis.call('XADD', PREFIX .. 'inbox:' .. node, 'MAXLEN', '~', 10000, '*',
  'k', 'w', 'f', ARGV[6], 'o', owner, 't', ARGV[7], 'ts', ARGV[8])
return { 'ok', owner }

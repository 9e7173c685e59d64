-- Claims a name across the cluster for one connection. ARGV: 5 name key,
-- 6 owner.
if not alive() then
  return { 'gone' }
end
if redis.call('HSETNX', OWNERS, ARGV[5], ARGV[6]) == 0 then
  return { 'taken' }
end
redis.call('SADD', names_of(NODE), ARGV[5])
return { 'ok' }

-- Index a tenant: its shard's id set, due sorted sets and flagged and pending sets (one hash tag).
-- KEYS[1]  id set of the shard
-- KEYS[2]  due by refresh expiry (score: Unix ms)
-- KEYS[3]  due by last activity (score: Unix ms)
-- KEYS[4]  ids of flagged tenants (reauthorization_required)
-- KEYS[5]  ids of pending tenants (awaiting their first authorization)
-- KEYS[6]  ids of tenants with a background identification pending
-- ARGV[1]  tenant id
-- ARGV[2]  'e', 'i' or '' (not due: flagged or no refresh token)
-- ARGV[3]  score
-- ARGV[4]  '1' when the tenant is flagged, else '0'
-- ARGV[5]  '1' when the tenant is pending, else '0'
-- ARGV[6]  '1' when its identification is pending, else '0'
redis.call('SADD', KEYS[1], ARGV[1])
if ARGV[2] == 'e' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
elseif ARGV[2] == 'i' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
if ARGV[4] == '1' then
  redis.call('SADD', KEYS[4], ARGV[1])
else
  redis.call('SREM', KEYS[4], ARGV[1])
end
if ARGV[5] == '1' then
  redis.call('SADD', KEYS[5], ARGV[1])
elseif redis.call('SISMEMBER', KEYS[5], ARGV[1]) == 1 then
  redis.call('SREM', KEYS[5], ARGV[1])
end
if ARGV[6] == '1' then
  redis.call('SADD', KEYS[6], ARGV[1])
elseif redis.call('SISMEMBER', KEYS[6], ARGV[1]) == 1 then
  redis.call('SREM', KEYS[6], ARGV[1])
end
return 1

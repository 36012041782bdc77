-- Remove a tenant from its shard's id set, due sorted sets, flagged and pending sets.
-- KEYS[1..6] as in index_put.lua; ARGV[1] tenant id.
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('SREM', KEYS[6], ARGV[1])
return 1

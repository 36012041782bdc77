-- Append a webhook event to its tenant's outbox queue (outbox_redis.go).
-- KEYS[1] event hash, KEYS[2] tenant queue, KEYS[3] due zset, KEYS[4]
-- queued zset, KEYS[5] dead zset (one shard's hash tag).
-- ARGV[1] id, ARGV[2] tenant, ARGV[3] type, ARGV[4] payload, ARGV[5]
-- created (Unix ms).
-- Returns 1 when added, 0 when the id is already queued or dead (then
-- one idempotent write, so that a WAIT after a retried add covers it).
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 't', ARGV[2])
  return 0
end
redis.call('HSET', KEYS[1], 't', ARGV[2], 'y', ARGV[3], 'p', ARGV[4], 'c', ARGV[5], 'a', 0, 'n', ARGV[5])
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
if redis.call('LLEN', KEYS[2]) == 1 then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
end
return 1

-- Release a lock if still held by this owner.
-- KEYS[1]  lock key
-- ARGV[1]  owner token
-- Returns 1 if released, 0 if the lock was not held by this owner.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

-- Extend a lock if still held by this owner.
-- KEYS[1]  lock key
-- ARGV[1]  owner token
-- ARGV[2]  new time to live in milliseconds
-- Returns 1 if extended, 0 if the lock was not held by this owner.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0

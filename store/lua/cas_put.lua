-- Compare-and-set a tenant record, fenced by version and write id.
-- KEYS[1]  tenant hash (fields: v = version, d = sealed blob, w = write id)
-- ARGV[1]  expected version (0 = must not exist)
-- ARGV[2]  new blob
-- ARGV[3]  expected write id ('' = compare the version only)
-- ARGV[4]  new write id (unique per Put; also inside the blob)
-- Returns {1, new_version} on success, {0, current_version} on conflict.
local cur = redis.call('HGET', KEYS[1], 'v')
if cur then
  cur = tonumber(cur)
else
  cur = 0
end
local expect = tonumber(ARGV[1])
if cur ~= expect then
  -- A resent script whose first run was applied (reply lost) succeeds again.
  if cur == expect + 1 and redis.call('HGET', KEYS[1], 'd') == ARGV[2] then
    return {1, cur}
  end
  return {0, cur}
end
local want = ARGV[3] or ''
if want ~= '' and (redis.call('HGET', KEYS[1], 'w') or '') ~= want then
  -- Same version number, another write: a failover lost writes (ABA).
  return {0, cur}
end
redis.call('HSET', KEYS[1], 'v', cur + 1, 'd', ARGV[2], 'w', ARGV[4] or '')
return {1, cur + 1}

-- Compare-and-set a tenant record.
-- KEYS[1]  tenant hash (fields: v = version, d = sealed blob)
-- ARGV[1]  expected version (0 = must not exist)
-- ARGV[2]  new blob (unique per Put: it holds a random write id)
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
redis.call('HSET', KEYS[1], 'v', cur + 1, 'd', ARGV[2])
return {1, cur + 1}

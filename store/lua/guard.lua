-- The mass-invalid_grant guard's state (GuardState, store/guard.go) of one
-- scope, one operation per call; every key shares the hash tag {guard}, so
-- a call is atomic on one slot. The scope's keys (all but KEYS[5]) expire
-- two windows (+1 min) after the last call that could change them. Times: milliseconds (scores) except flag times,
-- which are Unix nanoseconds kept as strings (they must come back exact).
-- KEYS[1] state hash: tripped ('1'/'0'), trips, last_new (ms)
-- KEYS[2] rejected zset: tenant -> first rejection in the window (ms)
-- KEYS[3] flags hash: tenant -> flag time (ns), revertible
-- KEYS[4] flags zset: tenant -> flag time (ms), for forgetting
-- KEYS[5] reverts hash: tenant -> flag time (ns) to revert
-- KEYS[6] acquitted zset: tenant -> when the guard that held it cleared (ms)
-- ARGV[1] op: reject | flagged | status | reverted | granted
-- ARGV[2] tenant ('' for none)   ARGV[3] now (ms)   ARGV[4] window (ms)
-- ARGV[5] threshold   ARGV[6] renew ('1': renew on every rejection; tests)
-- ARGV[7] flag time (ns)   ARGV[8] flag time (ms)   ARGV[9] trips seen
-- ARGV[10] at most that many pending reverts listed (status)
-- ARGV[11] probe ('1': the caller sends unless held; status)
-- ARGV[12] the probe interval (ms)
-- KEYS[1] also holds last_grant (ms) and last_probe (ms).
local op, tenant = ARGV[1], ARGV[2]
local now, w = tonumber(ARGV[3]), tonumber(ARGV[4])

local function settle()
  local cleared = 0
  local tripped = redis.call('HGET', KEYS[1], 'tripped') == '1'
  local lastNew = tonumber(redis.call('HGET', KEYS[1], 'last_new') or '0')
  if tripped and now - lastNew >= w then
    -- No new tenant for a window: clear; the held tenants are acquitted.
    -- Acquitted as of its rejection: a grant since (also one during the
    -- trip) proves the configuration worked while its token did not.
    local rej = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = 1, #rej, 2 do
      redis.call('ZADD', KEYS[6], rej[i + 1], rej[i])
    end
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'tripped', '0')
    tripped, cleared = false, 1
  end
  local edge = now - w -- forget what is w or more old
  -- An acquittal (KEYS[6]) lasts until the tenant's grant or flag.
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', edge)) do
    redis.call('HDEL', KEYS[3], id)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', edge)
  if not tripped then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', edge)
  end
  return tripped, cleared
end

local function keep()
  local ttl = 2 * w + 60000
  for _, i in ipairs({1, 2, 3, 4, 6}) do
    if redis.call('EXISTS', KEYS[i]) == 1 then
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
  end
end

local function trips()
  return tonumber(redis.call('HGET', KEYS[1], 'trips') or '0')
end

if op == 'reject' then
  local tripped, changed = settle()
  local acq = redis.call('ZSCORE', KEYS[6], tenant)
  if not tripped and acq then
    -- Held by a trip that cleared: not counted; flagged once a grant
    -- proved the configuration works.
    local flag = 0
    if tonumber(redis.call('HGET', KEYS[1], 'last_grant') or '0') >= tonumber(acq) then
      flag = 1
    end
    keep()
    return {flag, 0, changed, redis.call('ZCARD', KEYS[2]), trips()}
  end
  local known = redis.call('ZSCORE', KEYS[2], tenant)
  if not known or ARGV[6] == '1' then
    redis.call('ZADD', KEYS[2], now, tenant)
    redis.call('HSET', KEYS[1], 'last_new', now)
  end
  local n = redis.call('ZCARD', KEYS[2])
  local t = trips()
  if not tripped and n >= tonumber(ARGV[5]) then
    t = t + 1
    redis.call('HSET', KEYS[1], 'tripped', '1', 'trips', t)
    local fl = redis.call('HGETALL', KEYS[3])
    for i = 1, #fl, 2 do
      redis.call('HSET', KEYS[5], fl[i], fl[i + 1])
    end
    redis.call('DEL', KEYS[3], KEYS[4])
    tripped, changed = true, 1
  end
  local flag, tr = 1, 0
  if tripped then flag, tr = 0, 1 end
  keep()
  return {flag, tr, changed, n, t}
elseif op == 'flagged' then
  local tripped = settle()
  if tripped or trips() ~= tonumber(ARGV[9]) then
    -- Tripped since the verdict: a pending revert (the caller tries it
    -- at once; the fleet retries it).
    redis.call('HSET', KEYS[5], tenant, ARGV[7])
    return 0
  end
  redis.call('HSET', KEYS[3], tenant, ARGV[7])
  redis.call('ZADD', KEYS[4], tonumber(ARGV[8]), tenant)
  redis.call('ZREM', KEYS[6], tenant) -- flagged: its acquittal is decided
  keep()
  return 1
elseif op == 'status' then
  local tripped, changed = settle()
  local held, since, revert = 0, 0, ''
  if tenant ~= '' then
    local at = redis.call('ZSCORE', KEYS[2], tenant)
    if at and tripped then held, since = 1, tonumber(at) end
    revert = redis.call('HGET', KEYS[5], tenant) or ''
    local acq = redis.call('ZSCORE', KEYS[6], tenant)
    if acq and not tripped and tonumber(redis.call('HGET', KEYS[1], 'last_grant') or '0') < tonumber(acq) then
      local lastProbe = tonumber(redis.call('HGET', KEYS[1], 'last_probe') or '0')
      if ARGV[11] == '1' and now - lastProbe >= tonumber(ARGV[12]) then
        redis.call('HSET', KEYS[1], 'last_probe', now) -- this caller probes
        keep()
      else
        held, since = 1, tonumber(acq)
      end
    end
  end
  local tr = 0
  if tripped then tr = 1 end
  if changed == 1 then keep() end
  local out = {tr, changed, redis.call('ZCARD', KEYS[2]), trips(), held, since, revert, redis.call('HLEN', KEYS[5]),
    redis.call('ZCARD', KEYS[6])}
  local max = tonumber(ARGV[10])
  local rv = redis.call('HGETALL', KEYS[5])
  for i = 1, math.min(#rv, 2 * max), 2 do
    out[#out + 1] = rv[i]
    out[#out + 1] = rv[i + 1]
  end
  return out
elseif op == 'reverted' then
  if redis.call('HGET', KEYS[5], tenant) == ARGV[7] then
    redis.call('HDEL', KEYS[5], tenant)
  end
  return 1
elseif op == 'granted' then
  redis.call('ZREM', KEYS[2], tenant)
  redis.call('HDEL', KEYS[3], tenant)
  redis.call('ZREM', KEYS[4], tenant)
  redis.call('HDEL', KEYS[5], tenant)
  redis.call('ZREM', KEYS[6], tenant)
  redis.call('HSET', KEYS[1], 'last_grant', now)
  keep()
  return 1
end
return redis.error_reply('guard.lua: unknown op ' .. tostring(op))

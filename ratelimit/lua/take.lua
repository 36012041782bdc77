-- One governed request's budget step, atomic per tenant (ratelimit.Backend
-- Take; memory.go's budgetState.take is the same rules in Go).
-- KEYS[1]  the tenant's budget hash
-- ARGV[1]  now, Unix ms          ARGV[2]  cost (0 = merge and report only)
-- ARGV[3]  caller key ("" none)  ARGV[4]  the key's share (0 < s < 1, else none)
-- ARGV[5]  1 if an observation follows, else 0
-- ARGV[6..13] observation: at ms, bucket size, bucket used, drip/s,
--             window limit, window remaining, window reset ms, block until ms (0 none)
-- ARGV[14] idle TTL ms
-- ARGV[15] when the observed answer's request was sent unpaced (before this
--          process knew the budget), ms; 0 = it was paced, or unknown
-- ARGV[16] units wanted (a lease; <= cost: just the cost)
-- ARGV[17] unsent lease units given back   ARGV[18] their window's reset ms (0 none)
-- Returns {allowed 0/1, retry ms, size, drip, lvl, wl, wu, wr, blk, granted} as strings;
-- allowed with size = "" means nothing is known (no key was written).
local k = KEYS[1]
local now, cost, key, share = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local hasObs = ARGV[5] == '1'
local f = function(x) return string.format('%.17g', x) end

local s = redis.call('HMGET', k, 'size', 'drip', 'lvl', 't', 'wl', 'wu', 'wr', 'blk', 'e', 'b1', 'b0')
if not s[4] and not hasObs then
  return {'1', '0', '', '', '', '', '', '', '', '0'}
end
local size, drip, lvl, t = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0, tonumber(s[4]) or now
local wl, wu, wr, blk = tonumber(s[5]) or 0, tonumber(s[6]) or 0, tonumber(s[7]) or 0, tonumber(s[8]) or 0
-- Bookings of the current (b1) and previous (b0) second from e: an answer to
-- a request sent unpaced cannot include what was booked while it was on its
-- way; that is added to its report (to the second: conservative).
local e, b1, b0 = tonumber(s[9]) or 0, tonumber(s[10]) or 0, tonumber(s[11]) or 0
if now >= e + 1000 then
  if now >= e + 2000 then b0 = 0 else b0 = b1 end
  b1, e = 0, now - now % 1000
end

if size > 0 then lvl = math.max(0, lvl - drip * (now - t) / 1000) end
t = now
if wl > 0 and now >= wr then wl, wu, wr = 0, 0, 0 end

if hasObs then
  local at = tonumber(ARGV[6])
  local osize, oused, odrip = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
  local owl, orem, owr, oblk = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
  local osent = tonumber(ARGV[15])
  local missed = 0
  if osent > 0 then
    missed = b1
    if osent < e then missed = b1 + b0 end
  end
  if osize > 0 then
    size, drip = osize, odrip
    local reported = oused - drip * math.max(0, now - at) / 1000 + missed
    if reported > lvl then lvl = reported end
  end
  if owl > 0 and owr > now then
    local used = owl - orem + missed
    if wl == 0 or owr > wr + 1000 then
      wu, wr = used, owr
    else
      wu, wr = math.max(wu, used), math.max(wr, owr)
    end
    wl = owl
  end
  if oblk > blk then blk = oblk end
end

local allowed, wait, granted = true, 0, 0
local function deny(ms)
  allowed = false
  if ms > wait then wait = ms end
end
if blk > now then deny(blk - now) end

local shared = key ~= '' and share > 0 and share < 1 and (size > 0 or wl > 0)
local kl, kt, ku, kr
if shared then
  local ks = redis.call('HMGET', k, 'k|' .. key .. '|l', 'k|' .. key .. '|t', 'k|' .. key .. '|u', 'k|' .. key .. '|r')
  kl, kt, ku, kr = tonumber(ks[1]) or 0, tonumber(ks[2]) or now, tonumber(ks[3]) or 0, tonumber(ks[4]) or 0
  if size > 0 then kl = math.max(0, kl - drip * share * (now - kt) / 1000) end
  kt = now
  if kr ~= wr then ku, kr = 0, wr end
end

-- Unsent units of an earlier lease come back (window units only to their window).
local want, ret, retwr = tonumber(ARGV[16]) or 0, tonumber(ARGV[17]) or 0, tonumber(ARGV[18]) or 0
if ret > 0 then
  local samewin = wl > 0 and retwr > 0 and math.abs(retwr - wr) < 1
  if size > 0 then lvl = math.max(0, lvl - ret) end
  if samewin then wu = math.max(0, wu - ret) end
  if shared then
    if size > 0 then kl = math.max(0, kl - ret) end
    if samewin then ku = math.max(0, ku - ret) end
  end
end

if cost > 0 then
  if size > 0 then
    local need = lvl + cost - size
    if need > 0 and lvl > 0 then deny(need / drip * 1000) end
    if shared then
      local kneed = kl + cost - size * share
      if kneed > 0 and kl > 0 then deny(kneed / (drip * share) * 1000) end
    end
  end
  if wl > 0 then
    if wu + cost > wl then deny(wr - now) end
    if shared and ku + cost > wl * share then deny(wr - now) end
  end
  if allowed then
    granted = cost
    if want > cost and (size > 0 or wl > 0) then
      -- A lease: at most half the room left and an eighth of the budget.
      local g = want
      local function fit(capacity, used)
        g = math.min(g, math.max(cost, math.min((capacity - used) / 2, capacity / 8)))
      end
      if size > 0 then fit(size, lvl) end
      if wl > 0 then fit(wl, wu) end
      if shared then
        if size > 0 then fit(size * share, kl) end
        if wl > 0 then fit(wl * share, ku) end
      end
      granted = g
    end
    if size > 0 then lvl = lvl + granted end
    if wl > 0 then wu = wu + granted end
    if shared then kl, ku = kl + granted, ku + granted end
    b1 = b1 + granted
  end
end

redis.call('HSET', k, 'size', f(size), 'drip', f(drip), 'lvl', f(lvl), 't', f(t),
  'wl', f(wl), 'wu', f(wu), 'wr', f(wr), 'blk', f(blk), 'e', f(e), 'b1', f(b1), 'b0', f(b0))
if shared then
  redis.call('HSET', k, 'k|' .. key .. '|l', f(kl), 'k|' .. key .. '|t', f(kt), 'k|' .. key .. '|u', f(ku), 'k|' .. key .. '|r', f(kr))
end
local untilMs = math.max(blk, wr)
if size > 0 and drip > 0 then untilMs = math.max(untilMs, now + lvl / drip * 1000) end
redis.call('PEXPIRE', k, math.ceil(math.max(untilMs, now) - now + tonumber(ARGV[14])))

local a = '0'
if allowed then a = '1' end
return {a, f(math.ceil(wait)), f(size), f(drip), f(lvl), f(wl), f(wu), f(wr), f(blk), f(granted)}

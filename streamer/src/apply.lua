-- Tally: apply one batch's deltas and acknowledge it, atomically, exactly once.
--
-- The consumer group's pending-entries list is the commit log: a batch is
-- applied only if all of its entries are still pending for this consumer, and
-- they are acknowledged in the same script, so "acked <=> applied" holds
-- through retries of unknown outcome, crashes, XAUTOCLAIM and replays.
--
-- KEYS[1]  the shard stream
-- KEYS[2]  the shard's progress hash (events, batches)
-- KEYS[3..] aggregate keys (all with the stream's hash tag: one slot)
-- ARGV     group, consumer, n, id_1 .. id_n (ascending), then ops:
--   kind key_index ttl_seconds m items...
--   'H': m field/delta pairs  -> HINCRBY
--   'P': m members            -> PFADD
--   'L': m field/value pairs  -> keep the lowest value
--   'G': m field/value pairs  -> keep the greatest value
--   'S': m = 23 items: the facts of one session in this batch (KEYS[key_index]
--        is its session hash, ttl its lifetime), merged into the hash; the
--        session's old contribution to the reports is replaced by the new one
--        (see sessions.rs for the definitions this mirrors):
--        prefix site visitor st st_tie sr en pv ia et et_tie ep xt xt_tie xp
--        dv co lm lh ld ttl_m ttl_h ttl_d   (et.. and xt.. empty: no page view)
-- Returns n when applied, 0 when none of the ids is pending for this
-- consumer (already applied, or claimed by another), or the array of the ids
-- still owned when only some are (the caller re-aggregates those).

local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local n = tonumber(ARGV[3])
if n == nil or n < 1 or #ARGV < 3 + n then
  return redis.error_reply('ERR tally apply: bad id count')
end

local pending = redis.call('XPENDING', stream, group, ARGV[4], ARGV[3 + n], n + 64, consumer)
local owned = {}
for _, e in ipairs(pending) do owned[e[1]] = true end
local mine = {}
for i = 4, 3 + n do
  if owned[ARGV[i]] then mine[#mine + 1] = ARGV[i] end
end
if #mine == 0 then return 0 end
if #mine < n then return mine end

local function integer(s)
  local v = tonumber(s)
  return v ~= nil and v == math.floor(v)
end

-- Validate every op before the first write: a script that fails halfway
-- would leave its earlier writes in place.
local ops_start = 4 + n
local p = ops_start
while p <= #ARGV do
  local kind, ki, ttl, m = ARGV[p], tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3])
  if (kind ~= 'H' and kind ~= 'P' and kind ~= 'L' and kind ~= 'G' and kind ~= 'S') or ki == nil or ki < 3
      or ki > #KEYS or ttl == nil or m == nil or m < 1 or (kind == 'S' and m ~= 23) then
    return redis.error_reply('ERR tally apply: malformed op at argument ' .. p)
  end
  local width = 2
  if kind == 'P' or kind == 'S' then width = 1 end
  local last = p + 3 + m * width
  if last > #ARGV then
    return redis.error_reply('ERR tally apply: truncated op at argument ' .. p)
  end
  if width == 2 then
    for j = p + 5, last, 2 do
      if not integer(ARGV[j]) then
        return redis.error_reply('ERR tally apply: non-integer value at argument ' .. j)
      end
    end
  end
  if kind == 'S' then
    -- st st_tie en pv ia ttl_m ttl_h ttl_d must be integers; et/xt pairs
    -- integers or empty.
    for _, o in ipairs({4, 5, 7, 8, 9, 21, 22, 23}) do
      if not integer(ARGV[p + 3 + o]) then
        return redis.error_reply('ERR tally apply: non-integer session item at argument ' .. (p + 3 + o))
      end
    end
    for _, o in ipairs({10, 11, 13, 14}) do
      local v = ARGV[p + 3 + o]
      if v ~= '' and not integer(v) then
        return redis.error_reply('ERR tally apply: non-integer session item at argument ' .. (p + 3 + o))
      end
    end
  end
  p = last + 1
end

-- Session merges: counter deltas are summed here first, so a session whose
-- contribution did not change writes nothing.
local acc, acc_ttl = {}, {}
local function add(key, ttl, field, d)
  if d == 0 then return end
  local fields = acc[key]
  if fields == nil then
    fields = {}
    acc[key] = fields
    acc_ttl[key] = ttl
  end
  fields[field] = (fields[field] or 0) + d
end

local GRAINS = {'m', 'h', 'd'}
local SEP = string.char(31)

local function contribute(s, sign)
  for i, g in ipairs(GRAINS) do
    local sfx = ':' .. g .. ':' .. s.site .. ':' .. s['l' .. g]
    local ttl = s.ttl[i]
    local traffic = s.prefix .. 'traffic' .. sfx
    add(traffic, ttl, 'vi', sign)
    if tonumber(s.pv) == 1 and tonumber(s.ia) == 0 then add(traffic, ttl, 'bo', sign) end
    add(traffic, ttl, 'du', sign * math.floor((tonumber(s.en) - tonumber(s.st)) / 1000))
    local pages = s.prefix .. 'pages' .. sfx
    if s.et ~= '' then add(pages, ttl, 'en' .. SEP .. s.ep, sign) end
    if s.xt ~= '' then add(pages, ttl, 'ex' .. SEP .. s.xp, sign) end
    add(s.prefix .. 'sources' .. sfx, ttl, 'vi' .. SEP .. s.sr, sign)
    add(s.prefix .. 'devices' .. sfx, ttl, 'vi' .. SEP .. s.dv, sign)
    add(s.prefix .. 'locations' .. sfx, ttl, 'vi' .. SEP .. s.co, sign)
  end
end

-- (a_ts, a_tie) before (b_ts, b_tie)?
local function earlier(a_ts, a_tie, b_ts, b_tie)
  local a, b = tonumber(a_ts), tonumber(b_ts)
  return a < b or (a == b and tonumber(a_tie) < tonumber(b_tie))
end

local FACTS = {'prefix', 'site', 'vi', 'st', 'st_tie', 'sr', 'en', 'pv', 'ia', 'et', 'et_tie', 'ep',
               'xt', 'xt_tie', 'xp', 'dv', 'co', 'lm', 'lh', 'ld'}
local STORED = {'vi', 'st', 'st_tie', 'sr', 'en', 'pv', 'ia', 'et', 'et_tie', 'ep', 'xt', 'xt_tie', 'xp',
                'dv', 'co', 'lm', 'lh', 'ld'}

local function merge_session(key, ttl, q)
  local b = {}
  for i, name in ipairs(FACTS) do b[name] = ARGV[q + i - 1] end
  local ttls = {tonumber(ARGV[q + 20]), tonumber(ARGV[q + 21]), tonumber(ARGV[q + 22])}
  b.ttl = ttls
  local flat = redis.call('HGETALL', key)
  local new, old
  if #flat == 0 then
    new = b
  else
    old = {prefix = b.prefix, site = b.site, ttl = ttls}
    for i = 1, #flat, 2 do old[flat[i]] = flat[i + 1] end
    contribute(old, -1)
    new = {}
    for k, v in pairs(old) do new[k] = v end
    if earlier(b.st, b.st_tie, old.st, old.st_tie) then
      new.st, new.st_tie, new.sr, new.lm, new.lh, new.ld = b.st, b.st_tie, b.sr, b.lm, b.lh, b.ld
    end
    if tonumber(b.en) > tonumber(old.en) then new.en = b.en end
    new.pv = tostring(tonumber(old.pv) + tonumber(b.pv))
    new.ia = tostring(tonumber(old.ia) + tonumber(b.ia))
    if b.et ~= '' and (old.et == '' or earlier(b.et, b.et_tie, old.et, old.et_tie)) then
      new.et, new.et_tie, new.ep = b.et, b.et_tie, b.ep
    end
    if b.xt ~= '' and (old.xt == '' or earlier(old.xt, old.xt_tie, b.xt, b.xt_tie)) then
      new.xt, new.xt_tie, new.xp = b.xt, b.xt_tie, b.xp
    end
  end
  contribute(new, 1)
  -- Visitors per source: add-only, at the start bucket and source of the
  -- session as known now (a later batch with an earlier event adds the
  -- visitor to the corrected bucket too).
  if old == nil or new.st ~= old.st then
    for i, g in ipairs(GRAINS) do
      local hll = new.prefix .. 'sources.u:' .. g .. ':' .. new.site .. ':' .. new['l' .. g] .. ':' .. new.sr
      redis.call('PFADD', hll, new.vi)
      if ttls[i] > 0 then redis.call('EXPIRE', hll, ttls[i]) end
    end
  end
  local args = {}
  for _, name in ipairs(STORED) do
    args[#args + 1] = name
    args[#args + 1] = new[name]
  end
  redis.call('HSET', key, unpack(args))
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end

p = ops_start
while p <= #ARGV do
  local kind, key, ttl, m = ARGV[p], KEYS[tonumber(ARGV[p + 1])], tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3])
  local q = p + 4
  if kind == 'H' then
    for j = q, q + 2 * m - 1, 2 do
      redis.call('HINCRBY', key, ARGV[j], ARGV[j + 1])
    end
    p = q + 2 * m
  elseif kind == 'P' then
    for j = q, q + m - 1, 500 do
      redis.call('PFADD', key, unpack(ARGV, j, math.min(j + 499, q + m - 1)))
    end
    p = q + m
  elseif kind == 'S' then
    merge_session(key, ttl, q)
    p = q + m
  else
    for j = q, q + 2 * m - 1, 2 do
      local cur = tonumber(redis.call('HGET', key, ARGV[j]))
      local v = tonumber(ARGV[j + 1])
      if cur == nil or (kind == 'L' and v < cur) or (kind == 'G' and v > cur) then
        redis.call('HSET', key, ARGV[j], ARGV[j + 1])
      end
    end
    p = q + 2 * m
  end
  if ttl > 0 and kind ~= 'S' then redis.call('EXPIRE', key, ttl) end
end

for key, fields in pairs(acc) do
  for field, d in pairs(fields) do
    if d ~= 0 then
      if redis.call('HINCRBY', key, field, d) == 0 then redis.call('HDEL', key, field) end
    end
  end
  if acc_ttl[key] > 0 then redis.call('EXPIRE', key, acc_ttl[key]) end
end

for j = 4, 3 + n, 500 do
  redis.call('XACK', stream, group, unpack(ARGV, j, math.min(j + 499, 3 + n)))
end
redis.call('HINCRBY', KEYS[2], 'events', n)
redis.call('HINCRBY', KEYS[2], 'batches', 1)
return n

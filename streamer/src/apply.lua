-- Tally: apply one batch's deltas and acknowledge it, atomically, exactly once.
--
-- The consumer group's pending-entries list is the commit log: a batch is
-- applied only if all of its entries are still pending for this consumer, and
-- they are acknowledged in the same script, so "acked <=> applied" holds
-- through retries of unknown outcome, crashes, XAUTOCLAIM and replays.
--
-- Session merges are computed by the caller from the session states it read
-- before the call (see apply.rs); the script writes them only if every state
-- is still what the caller read (optimistic concurrency), so a session
-- touched by another consumer in between is never merged twice. The
-- caller's deltas already hold the replacement of each session's old
-- contribution to the reports by its new one.
--
-- KEYS[1]  the shard stream
-- KEYS[2]  the shard's progress hash (events, entries, batches)
-- KEYS[3..2+s] the batch's s session keys, then the ops' keys (all with
--          the stream's hash tag: one slot)
-- ARGV     group, consumer, events (in the n entries), n, id_1 .. id_n
--          (ascending),
--          s, the sessions' ttl_seconds, then per session (in the order of
--            its key) expected new (expected empty: it had no state),
--          then ops: kind key_index ttl_seconds m items...
--   'H': m field/delta pairs  -> HINCRBY (a field back at 0 is removed)
--   'P': m members            -> PFADD (the visitors that the session
--                                 merges add; a batch's own sketch members
--                                 come as plain PFADDs ahead of the call)
--   'L': m field/value pairs  -> keep the lowest value
--   'G': m field/value pairs  -> keep the greatest value
-- Returns n when applied; 0 when none of the ids is pending for this
-- consumer (already applied, or claimed by another); the array of the ids
-- still owned when only some are (the caller re-aggregates those); or the
-- string 'conflict' when a session state changed since the caller read it
-- (the caller reads again and recomputes). Nothing is written unless n is
-- returned.

local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local events, n = tonumber(ARGV[3]), tonumber(ARGV[4])
if events == nil or n == nil or n < 1 or #ARGV < 5 + n then
  return redis.error_reply('ERR tally apply: bad id count')
end

local pending = redis.call('XPENDING', stream, group, ARGV[5], ARGV[4 + n], n + 64, consumer)
local owned = {}
for _, e in ipairs(pending) do owned[e[1]] = true end
local mine = {}
for i = 5, 4 + n do
  if owned[ARGV[i]] then mine[#mine + 1] = ARGV[i] end
end
if #mine == 0 then return 0 end
if #mine < n then return mine end

-- A value as HINCRBY takes it: a decimal integer without leading zeros in
-- the signed 64-bit range. (tonumber also reads '1e3', '0x10' and integers
-- past 2^63, which HINCRBY would refuse after the script's first writes.)
-- Nineteen digits are compared with the range's end in two parts, each
-- exact as a double (Lua compares strings by the locale's collation).
local match, sub = string.match, string.sub
local function integer(s)
  if s == '0' then return true end
  local sign, digits = match(s, '^(%-?)([1-9]%d*)$')
  if digits == nil or #digits > 19 then return false end
  if #digits < 19 then return true end
  local high, low = tonumber(sub(digits, 1, 10)), tonumber(sub(digits, 11))
  local last = 854775807
  if sign == '-' then last = 854775808 end
  return high < 9223372036 or (high == 9223372036 and low <= last)
end

-- Validate everything before the first write: a script that fails halfway
-- would leave its earlier writes in place.
local s, session_ttl = tonumber(ARGV[5 + n]), tonumber(ARGV[6 + n])
if s == nil or s < 0 or session_ttl == nil or #ARGV < 6 + n + 2 * s or #KEYS < 2 + s then
  return redis.error_reply('ERR tally apply: bad session count')
end
local sessions_start = 7 + n
local ops_start = sessions_start + 2 * s
local p = ops_start
while p <= #ARGV do
  local kind, ki, ttl, m = ARGV[p], tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3])
  if (kind ~= 'H' and kind ~= 'P' and kind ~= 'L' and kind ~= 'G') or ki == nil or ki < 3
      or ki > #KEYS or ttl == nil or m == nil or m < 1 then
    return redis.error_reply('ERR tally apply: malformed op at argument ' .. p)
  end
  local width = 2
  if kind == 'P' then width = 1 end
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
  p = last + 1
end

-- The session states must be what the caller merged with.
for first = 1, s, 500 do
  local last = math.min(first + 499, s)
  local cur = redis.call('MGET', unpack(KEYS, 2 + first, 2 + last))
  for i, v in ipairs(cur) do
    if (v or '') ~= ARGV[sessions_start + 2 * (first + i - 2)] then return 'conflict' end
  end
end

for i = 1, s do
  local new = ARGV[sessions_start + 2 * i - 1]
  if session_ttl > 0 then
    redis.call('SET', KEYS[2 + i], new, 'EX', session_ttl)
  else
    redis.call('SET', KEYS[2 + i], new)
  end
end

p = ops_start
while p <= #ARGV do
  local kind, key, ttl, m = ARGV[p], KEYS[tonumber(ARGV[p + 1])], tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3])
  local q = p + 4
  if kind == 'H' then
    for j = q, q + 2 * m - 1, 2 do
      if redis.call('HINCRBY', key, ARGV[j], ARGV[j + 1]) == 0 then
        redis.call('HDEL', key, ARGV[j])
      end
    end
    p = q + 2 * m
  elseif kind == 'P' then
    for j = q, q + m - 1, 500 do
      redis.call('PFADD', key, unpack(ARGV, j, math.min(j + 499, q + m - 1)))
    end
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
  -- NX: a key's lifetime runs from its first write; a key that has one is
  -- left as it is, which Redis neither writes nor propagates.
  if ttl > 0 then redis.call('EXPIRE', key, ttl, 'NX') end
end

for j = 5, 4 + n, 500 do
  redis.call('XACK', stream, group, unpack(ARGV, j, math.min(j + 499, 4 + n)))
end
redis.call('HINCRBY', KEYS[2], 'events', events)
redis.call('HINCRBY', KEYS[2], 'entries', n)
redis.call('HINCRBY', KEYS[2], 'batches', 1)
return n

-- Tally ingest: assign each event its session and append the events to the
-- shard stream, several to an entry, for a group of events of one shard and
-- one visit window, in one atomic call.
--
-- Open visits are kept in hashes of 30-minute windows of event time (the
-- inactivity timeout): field "<visitor>:<site>" of the window holding the
-- visit's last event, value "<session id>:<last event ms>". An event at time
-- ts can continue only a visit whose last event is within the timeout of ts,
-- so it looks in the window of ts and the two beside it, and continues the
-- one with the latest last event; otherwise its candidate id starts a new
-- visit. Windows of event time place back-dated events from the batch API in
-- the right visit whatever the clock. A window's hash lives for the timeout
-- after its last write. The session id is written into the record's last
-- field.
--
-- KEYS[1]        the shard stream
-- KEYS[2..4]     the visit windows before, of and after the events' window
--                (same hash tag as the stream)
-- ARGV[1]        n events, ARGV[2] m fields per record, ARGV[3] timeout ms,
-- ARGV[4]        most events per entry,
-- then the m field names, then the n events' visit fields (in one run, so
-- that each window is read with one HMGET and no table is built for it),
-- then per event its record's m values as stored but for the first and the
-- last, which this script sets: the first is sent as the event ms (the
-- script stores it relative to the entry id), the last as the candidate
-- session id (the script stores the session the event joins). The values
-- come in the record's order so that an entry of several events is built
-- from one unpack of them, a table sized once (filled value by value, it
-- grew through Lua's hash part and rehashed, a tenth of Redis's work per
-- event, `bench/append_cost.py`).
-- Each entry holds the records of up to ARGV[4] consecutive events (see
-- schema/src/entry.rs). A record's first value is the event time; it is
-- stored relative to the entry id's milliseconds, a small integer for live
-- events: the id is chosen as "<now ms>-*". That fails only when the
-- stream's last id is later (the clock stepped back); such an entry (and an
-- event whose time is too far from now to be told apart from an absolute
-- time) gets an automatic id and keeps absolute times.
-- Nothing is written before every argument is checked. Returns the entry
-- ids, in order.

local n, m, timeout_arg, per_entry = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local timeout = tonumber(timeout_arg)
if n == nil or m == nil or timeout == nil or per_entry == nil or per_entry < 1 or m < 2 or n < 1
    or #KEYS ~= 4 or #ARGV ~= 4 + m + n * (1 + m) then
  return redis.error_reply('ERR tally append: bad arguments')
end
local stride = m
local names = {}
for j = 1, m do names[j] = ARGV[4 + j] end
local f0 = 4 + m
local events0 = f0 + n
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
-- string.format('%d') rather than tostring: tostring formats a number as
-- '%.14g', which cost about 2,800 instructions per event.
local find, sub, abs, format = string.find, string.sub, math.abs, string.format

-- The stored visits of each event's field in the three windows.
local stored = {}
for w = 1, 3 do
  stored[w] = redis.call('HMGET', KEYS[w + 1], unpack(ARGV, f0 + 1, f0 + n))
end

-- Visits this call read or made, per field: a list of
-- {session id, last ms text, last ms, window (1 to 3), dirty}.
local visits = {}
-- Event i's stored visit in window w, joined by session id to the one the
-- call knows: a visit whose last event moved to a later window left an
-- older copy behind, so the latest last event wins.
local function stored_visit(i, w, known)
  local cur = stored[w][i]
  if not cur then return nil end
  local colon = find(cur, ':', 1, true)
  local last = colon and tonumber(sub(cur, colon + 1))
  if not last then return nil end
  local sid = sub(cur, 1, colon - 1)
  for _, v in ipairs(known) do
    if v[1] == sid then
      if last > v[3] then v[2], v[3], v[4] = sub(cur, colon + 1), last, w end
      return v
    end
  end
  local v = {sid, sub(cur, colon + 1), last, w, false}
  known[#known + 1] = v
  return v
end

-- Each event's time and session, in tables of n made at once (copies of
-- the visit fields, overwritten below): filled one by one, they grew
-- through the hash part.
local ts_of, sid_of = {unpack(ARGV, f0 + 1, f0 + n)}, {unpack(ARGV, f0 + 1, f0 + n)}
local p = events0 + 1
for i = 1, n do
  local field, ts_text = ARGV[f0 + i], ARGV[p]
  local ts = tonumber(ts_text)
  if ts == nil then
    return redis.error_reply('ERR tally append: bad event time at argument ' .. p)
  end
  local known = visits[field]
  if known == nil then
    known = {}
    visits[field] = known
  end
  local best
  for _, v in ipairs(known) do
    if abs(ts - v[3]) <= timeout and (best == nil or v[3] > best[3]) then best = v end
  end
  if best == nil then
    for w = 1, 3 do
      local v = stored_visit(i, w, known)
      if v and abs(ts - v[3]) <= timeout and (best == nil or v[3] > best[3]) then best = v end
    end
  end
  if best == nil then
    best = {ARGV[p + m - 1], ts_text, ts, 2, true}
    known[#known + 1] = best
  elseif ts > best[3] then
    best[2], best[3], best[4], best[5] = ts_text, ts, 2, true
  end
  ts_of[i], sid_of[i] = ts, best[1]
  p = p + stride
end

-- Entries of up to per_entry events each: one event's record by name (the
-- same names as every such entry, which Redis stores once per node),
-- several records by value after the field '#' (see schema/src/entry.rs).
local ids = {}
local relative = true
local first = 1
while first <= n do
  local last = math.min(n, first + per_entry - 1)
  local q = events0 + 1 + (first - 1) * stride
  -- record[time_at + (i - first) * time_step]: where event i's time goes.
  local record, time_at, time_step
  if first == last then
    record = {KEYS[1], '*', names[1], ARGV[q]}
    for j = 2, m - 1 do
      record[2 * j + 1] = names[j]
      record[2 * j + 2] = ARGV[q + j - 1]
    end
    record[2 * m + 1], record[2 * m + 2] = names[m], sid_of[first]
    time_at, time_step = 4, 0
  else
    record = {KEYS[1], '*', '#', tostring(last - first + 1), unpack(ARGV, q, q + (last - first + 1) * stride - 1)}
    for i = first, last do record[4 + (i - first + 1) * m] = sid_of[i] end
    time_at, time_step = 5, m
  end
  local id
  if relative then
    record[2] = now_ms .. '-*'
    for i = first, last do
      local rel = ts_of[i] - now_ms
      if abs(rel) < 1e11 then record[time_at + (i - first) * time_step] = format('%d', rel) end
    end
    id = redis.pcall('XADD', unpack(record))
    if type(id) == 'table' and id.err then id, relative = nil, false end
  end
  if id == nil then
    -- The event times as sent: absolute.
    record[2] = '*'
    for i = first, last do record[time_at + (i - first) * time_step] = ARGV[q + (i - first) * stride] end
    id = redis.call('XADD', unpack(record))
  end
  ids[#ids + 1] = id
  first = last + 1
end

-- Each window written once, its fields in chunks; it lives for the timeout
-- after its last write. (Should an XADD fail above, the call is answered as
-- failed and no visit changes; a retry assigns the same sessions, since a
-- new visit's id derives from its first event's visitor and time.)
local writes = {}
for field, known in pairs(visits) do
  for _, v in ipairs(known) do
    if v[5] then
      local w = writes[v[4]]
      if w == nil then
        w = {}
        writes[v[4]] = w
      end
      w[#w + 1] = field
      w[#w + 1] = v[1] .. ':' .. v[2]
    end
  end
end
for k, w in pairs(writes) do
  for j = 1, #w, 400 do
    redis.call('HSET', KEYS[k + 1], unpack(w, j, math.min(j + 399, #w)))
  end
  redis.call('PEXPIRE', KEYS[k + 1], timeout_arg)
end
return ids

-- Tally ingest: assign each event its session and append it to the shard
-- stream, for a group of events of one shard, in one atomic call.
--
-- A visitor's open session lives in a string "<session id>:<last event ms>"
-- that expires after the inactivity timeout. An event within the timeout of
-- the last one (in event time, so back-dated events from the batch API are
-- placed right) continues the session; otherwise the event's candidate id
-- starts a new one. The session id is written into the record's last field.
--
-- KEYS[1]        the shard stream
-- KEYS[1 + i]    visit key of event i (same hash tag as the stream)
-- ARGV[1]        n events, ARGV[2] m fields per record, ARGV[3] timeout ms
-- then the m field names (once per call: fewer arguments to convert), then
-- per event: candidate session id, event ms, the record's m values (the
-- last is the session field).
-- The record's first pair is the event time; it is stored relative to the
-- entry id's milliseconds (see schema/src/event.rs), a small integer for live
-- events: the id is chosen as "<now ms>-*". That fails only when the stream's
-- last id is later (the clock stepped back); such an entry (and one whose
-- time is too far from now to be told apart from an absolute time) gets an
-- automatic id and keeps its absolute time.
-- Returns the entry ids, in order.

local n, m, timeout_arg = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local timeout = tonumber(timeout_arg)
if n == nil or m == nil or timeout == nil or m < 1 or #KEYS ~= n + 1 or #ARGV ~= 3 + m + n * (2 + m) then
  return redis.error_reply('ERR tally append: bad arguments')
end
local record = {KEYS[1], '*'}
for j = 1, m do
  record[2 * j + 1] = ARGV[3 + j]
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local now_id = now_ms .. '-*'
local find, sub, abs = string.find, string.sub, math.abs
-- Visits touched by this call: key -> {session id, last ms (text), last ms}.
-- A visitor's later events in the call read it here, and each visit key is
-- written once, after the loop. (Should an XADD fail midway, the call is
-- answered as failed and no visit key changes; a retry assigns the same
-- sessions, since a new visit's id derives from its first event's visitor
-- and time.)
local visits = {}
-- relative: ids "<now ms>-*" may still be tried; proven: one was accepted,
-- so every later one is too (same milliseconds, next sequence number).
local relative, proven = true, false
local ids = {}
local p = 4 + m
for i = 1, n do
  local key, sid, ts_text = KEYS[i + 1], ARGV[p], ARGV[p + 1]
  local ts = tonumber(ts_text)
  local open = visits[key]
  if open == nil then
    local cur = redis.call('GET', key)
    if cur then
      local colon = find(cur, ':', 1, true)
      local last = colon and tonumber(sub(cur, colon + 1))
      if last then open = {sub(cur, 1, colon - 1), sub(cur, colon + 1), last} end
    end
  end
  if open and abs(ts - open[3]) <= timeout then
    sid = open[1]
    if ts > open[3] then open[2], open[3] = ts_text, ts end
  else
    open = {sid, ts_text, ts}
  end
  visits[key] = open
  for j = 1, m do record[2 * j + 2] = ARGV[p + 1 + j] end
  record[2 * m + 2] = sid
  local rel = ts - now_ms
  local id
  if relative and abs(rel) < 1e11 then
    record[2], record[4] = now_id, tostring(rel)
    if proven then
      id = redis.call('XADD', unpack(record))
    else
      id = redis.pcall('XADD', unpack(record))
      if type(id) == 'table' and id.err then
        id, relative = nil, false
      else
        proven = true
      end
    end
  end
  if id == nil then
    record[2], record[4] = '*', ts_text
    id = redis.call('XADD', unpack(record))
  end
  ids[i] = id
  p = p + 2 + m
end
for key, open in pairs(visits) do
  redis.call('SET', key, open[1] .. ':' .. open[2], 'PX', timeout_arg)
end
return ids

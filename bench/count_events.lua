-- Events held by the given streams: an entry holds one event's named
-- record, or several records by value after a field '#' holding their
-- number (schema/src/entry.rs), or (older entries) several named records,
-- each with one time field `t`.
-- usage: redis-cli --eval bench/count_events.lua <stream> ... ,
-- (blocks Redis while it reads: for benchmarks, not for production)
local total = 0
for _, stream in ipairs(KEYS) do
  local from = '-'
  while true do
    local entries = redis.call('XRANGE', stream, from, '+', 'COUNT', 1000)
    for _, entry in ipairs(entries) do
      local fields = entry[2]
      if fields[1] == '#' then
        total = total + tonumber(fields[2])
      else
        for i = 1, #fields, 2 do
          if fields[i] == 't' then total = total + 1 end
        end
      end
    end
    if #entries < 1000 then break end
    from = '(' .. entries[#entries][1]
  end
end
return total

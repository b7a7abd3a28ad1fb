-- Whether consumer group ARGV[1] has read and acknowledged everything in
-- each given stream (lag 0, nothing pending): 1 if so, else 0. One call
-- checks all shards, so a benchmark polling it costs one redis-cli process
-- per poll rather than one per shard.
-- usage: redis-cli --eval bench/drained.lua <stream> ... , <group>
for _, stream in ipairs(KEYS) do
  if redis.call('EXISTS', stream) == 0 then return 0 end
  local found = false
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info['name'] == ARGV[1] then
      found = true
      if info['pending'] ~= 0 or info['lag'] ~= 0 then return 0 end
    end
  end
  if not found then return 0 end
end
return 1

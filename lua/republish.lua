-- republish: replace the jobs a registered instance offers (its jobs directory changed).
-- KEYS[1]  tagged key prefix
-- ARGV[1]  instance id
-- ARGV[2]  n jobs, then n pairs: job name, definition (JSON text)
-- Returns  {0, now, {names dropped from the catalog}}: a name this instance no longer offers
--          leaves the catalog when no other live instance offers it either
-- Errors   {-1} the instance is unknown or its lease lapsed (it registers again, with its jobs)
-- include: now, lease_ok, flow

local inst = ARGV[1]
local now = now_ms()
if not lease_ok(inst, now) then return {E_LEASE_LOST} end
local jk = K.instance_jobs(inst)
local before = redis.call('SMEMBERS', jk)
redis.call('DEL', jk)
local n = tonumber(ARGV[2])
for i = 0, n - 1 do
  local name, def = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  redis.call('SADD', jk, name)
  redis.call('HSET', K.jobs(), name, def)
  publish_limits(name, def)
end
local dropped = {}
local live = redis.call('ZRANGEBYSCORE', K.instances(), now, '+inf')
for _, name in ipairs(before) do
  if redis.call('SISMEMBER', jk, name) == 0 then
    local offered = false
    for _, other in ipairs(live) do
      if other ~= inst and redis.call('SISMEMBER', K.instance_jobs(other), name) == 1 then
        offered = true
        break
      end
    end
    if not offered then
      redis.call('HDEL', K.jobs(), name)
      redis.call('HDEL', K.flow(), name)
      dropped[#dropped + 1] = name
    end
  end
end
return {OK, now, dropped}

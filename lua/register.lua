-- register: announce an instance, its slots and the jobs it offers; publish the catalog.
-- KEYS[1]  tagged key prefix
-- ARGV[1]  instance id
-- ARGV[2]  lease TTL (ms)
-- ARGV[3]  slots total
-- ARGV[4]  host
-- ARGV[5]  pid
-- ARGV[6]  version
-- ARGV[7]  n jobs, then n pairs: job name, definition (JSON text)
-- Returns  {0, now, lease expiry}
-- Events   instance_up
-- include: now, emit, flow

local inst, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local ih = K.instance(inst)
redis.call('DEL', ih, K.instance_jobs(inst), K.instance_tasks(inst), K.instance_cancel(inst))
redis.call('HSET', ih, 'id', inst, 'slots_total', ARGV[3], 'slots_used', 0, 'host', ARGV[4],
  'pid', ARGV[5], 'version', ARGV[6], 'started_at', now, 'heartbeat_at', now, 'draining', 0)
local n = tonumber(ARGV[7])
for i = 0, n - 1 do
  local name, def = ARGV[8 + 2 * i], ARGV[9 + 2 * i]
  redis.call('SADD', K.instance_jobs(inst), name)
  redis.call('HSET', K.jobs(), name, def)
  publish_limits(name, def)
end
redis.call('ZADD', K.instances(), now + ttl, inst)
emit('instance_up', inst, {'slots', ARGV[3]})
return {OK, now, now + ttl}

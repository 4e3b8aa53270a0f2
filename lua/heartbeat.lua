-- heartbeat: renew an instance's lease.
-- KEYS[1]  tagged key prefix
-- ARGV[1]  instance id
-- ARGV[2]  lease TTL (ms)
-- Returns  {0, now, lease expiry, {running task ids flagged for cancel}}
-- Errors   {-1} the instance is unknown or its lease already lapsed: it must fence
-- include: now, lease_ok

local inst, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
if not lease_ok(inst, now) then return {E_LEASE_LOST} end
local exp = now + ttl
redis.call('ZADD', K.instances(), exp, inst)
redis.call('HSET', K.instance(inst), 'heartbeat_at', now)
return {OK, now, exp, redis.call('SMEMBERS', K.instance_cancel(inst))}

-- look: whether anything is due for an idle instance in this partition, without claiming
-- (a worker over several partitions sends its periodic look to all of them in one pipeline
-- per node, then claims only where something is due).
-- KEYS[1]  tagged key prefix
-- ARGV[1]  instance id
-- Returns  {0, now, next due (ms, -1 if none; `now` if something is due now), due now (0|1),
--          {cancelled running ids}, microseconds past `now`'s millisecond}
-- Errors   {-1} the instance's lease lapsed or it is unknown: it must fence
-- include: now, lease_ok

local inst = ARGV[1]
local now = now_ms()
if not lease_ok(inst, now) then return {E_LEASE_LOST} end
-- The earliest of the due set and of every open lane set (see flow): a lane's head is due
-- as a plain task is; a lane parked in place (scored from flow's PARKED, 1e15, on) is not.
local keys = {K.due(), K.lanes()}
for _, p in ipairs(redis.call('ZRANGE', K.prios(), 0, -1)) do keys[#keys + 1] = K.plane(p) end
local next_due, due_now = -1, 0
for _, key in ipairs(keys) do
  local head = redis.call('ZRANGEBYSCORE', key, '-inf', '(1e15', 'WITHSCORES', 'LIMIT', 0, 1)
  if #head > 0 and (next_due < 0 or tonumber(head[2]) < next_due) then
    next_due = tonumber(head[2])
  end
end
if next_due >= 0 and next_due <= now then due_now, next_due = 1, now end
-- As a claim does: a schedule sooner than this wakes the instance.
if next_due >= 0 then
  redis.call('ZADD', K.sleepers(), next_due, inst)
else
  redis.call('ZADD', K.sleepers(), '+inf', inst)
end
return {OK, now, next_due, due_now, redis.call('SMEMBERS', K.instance_cancel(inst)),
  NOW_US_PAST_MS}

-- claim: take due tasks that fit the instance's free slots, in due order.
-- KEYS[1]  tagged key prefix
-- ARGV[1]  instance id
-- ARGV[2]  most tasks to take
-- ARGV[3]  free slots over all partitions, as the worker counts them (-1: the instance's
--          hash in this partition decides; see claim_due)
-- Returns  {0, now, next due (ms, -1 if none), {cancelled running ids}, {task records},
--          microseconds past `now`'s millisecond (to time the next due one closely)}
--          a task record: {id, job, args, attempt, started_at, start_at, max_ms, slots,
--                          series id, last_completed_at, skipped_runs, series spec,
--                          series grid origin, parents (comma-separated, or "")}
-- Errors   {-1} the instance's lease lapsed or it is unknown: it must fence
-- Events   running (per task)
-- include: now, lease_ok, claim_due

local inst = ARGV[1]
local now = now_ms()
if not lease_ok(inst, now) then return {E_LEASE_LOST} end
return claim_due(inst, tonumber(ARGV[2]), now, tonumber(ARGV[3]) or -1)

-- deregister: remove an instance that shut down cleanly; fail what it still held.
-- KEYS[1]  tagged key prefix
-- ARGV[1]  instance id
-- ARGV[2]  reason for tasks it still held (e.g. "worker shutdown")
-- ARGV[3]  n, then n triples for series runs the caller computed the next start of:
--          task id, next start (ms, or "" for none), skipped runs (as for reap)
-- Returns  {0, number of tasks failed, {needs}}: needs lists series runs left running for want
--          of a next start, each {task id, series spec, origin, start_at}; the instance stays
--          until a second call gives them (or the reaper takes it once its lease lapses).
-- Events   failed (per task), instance_down
-- include: now, emit, read_given, fail_running, drop_instance

local inst, reason = ARGV[1], ARGV[2]
local now = now_ms()
local given = read_given(3)
local needs = {}
local failed = 0
for _, id in ipairs(redis.call('SMEMBERS', K.instance_tasks(inst))) do
  local was_running = redis.call('HGET', K.task(id), 'status') == 'running'
  if fail_running(id, reason, given, needs, now) and was_running then failed = failed + 1 end
end
if #needs == 0 then
  drop_instance(inst)
  emit('instance_down', inst, {})
end
return {OK, failed, needs}

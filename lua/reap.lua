-- reap: fail the running tasks of instances whose lease lapsed, and any running task past
-- its hard deadline (start + max duration + 60 s); free their slots; continue their series.
-- Idempotent: any instance may run it at any time.
-- KEYS[1]  tagged key prefix
-- ARGV[1]  n, then n triples for series runs the caller computed the next start of:
--          task id, next start (ms, or "" for none), skipped runs
-- Returns  {0, now, {reaped ids}, {needs}} where needs lists series runs left running because
--          no next start was given: each {task id, series spec, origin, start_at}; call again
--          with their next starts.
-- Events   failed (per task), instance_lost
-- include: now, emit, read_given, fail_running, drop_instance, trim_finished

local now = now_ms()
local given = read_given(1)
local reaped, needs = {}, {}
local function reap_one(id, reason)
  local was_running = redis.call('HGET', K.task(id), 'status') == 'running'
  local done = fail_running(id, reason, given, needs, now)
  if done and was_running then reaped[#reaped + 1] = id end
  return done
end

local dead = redis.call('ZRANGEBYSCORE', K.instances(), '-inf', '(' .. now, 'LIMIT', 0, 100)
for _, inst in ipairs(dead) do
  local all_done = true
  for _, id in ipairs(redis.call('SMEMBERS', K.instance_tasks(inst))) do
    if not reap_one(id, 'instance ' .. inst .. ' lost') then all_done = false end
  end
  if all_done then
    drop_instance(inst)
    emit('instance_lost', inst, {})
  end
end
local late = redis.call('ZRANGEBYSCORE', K.running(), '-inf', '(' .. now, 'LIMIT', 0, 100)
for _, id in ipairs(late) do
  local inst = redis.call('HGET', K.task(id), 'instance') or '?'
  reap_one(id, 'timeout: no report from instance ' .. inst .. ' by the hard deadline')
end
trim_finished(now)
return {OK, now, reaped, needs}

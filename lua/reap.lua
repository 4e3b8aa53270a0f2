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

local now = now_ms()
local given = {}
local n = tonumber(ARGV[1]) or 0
for i = 0, n - 1 do
  given[ARGV[2 + 3 * i]] = {ARGV[3 + 3 * i], tonumber(ARGV[4 + 3 * i]) or 0}
end

local reaped, needs = {}, {}
local function reap_one(id, reason)
  local tk = K.task(id)
  if redis.call('HGET', tk, 'status') ~= 'running' then return true end
  if retry_task(id, reason, '', now) then
    reaped[#reaped + 1] = id
    return true
  end
  local sid = redis.call('HGET', tk, 'series')
  local start, skipped = nil, 0
  if sid and sid ~= '' then
    local s = redis.call('HMGET', K.series(sid), 'status', 'current', 'spec', 'origin')
    if s[1] == 'active' and s[2] == id and s[3] and s[3] ~= '' then
      local g = given[id]
      if not g then
        needs[#needs + 1] = {id, s[3], s[4], redis.call('HGET', tk, 'start_at')}
        return false
      end
      if g[1] ~= '' then start = tonumber(g[1]) end
      skipped = g[2]
    end
  end
  close_task(id, 'failed', reason, '', now)
  redis.call('HSET', tk, 'log_url', '')
  continue_series(id, 'failed', start, skipped, now)
  settle_dependents(id, 'failed', now)
  reaped[#reaped + 1] = id
  return true
end

local dead = redis.call('ZRANGEBYSCORE', K.instances(), '-inf', '(' .. now, 'LIMIT', 0, 100)
for _, inst in ipairs(dead) do
  local all_done = true
  for _, id in ipairs(redis.call('SMEMBERS', K.instance_tasks(inst))) do
    if not reap_one(id, 'instance ' .. inst .. ' lost') then all_done = false end
  end
  if all_done then
    redis.call('DEL', K.instance(inst), K.instance_jobs(inst), K.instance_tasks(inst),
      K.instance_cancel(inst), K.wake(inst))
    redis.call('ZREM', K.instances(), inst)
    redis.call('ZREM', K.sleepers(), inst)
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

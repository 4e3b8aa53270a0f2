-- claim_take: how a claim takes one task (both the plain and the laned claim use it).
-- include: emit

local GRACE_MS = 60000          -- reaper backstop: deadline = start + max duration + this

-- The claim record of a task (see claim.lua) from its fields as claim read them:
-- f = {slots, job, max_ms, args, attempt, start_at, series, last_completed_at,
-- skipped_runs, start_after, parents}, with the new attempt and start time. The id is the
-- key, not a field. Last comes its parents (a fan-in's all, else the --after task, or ""):
-- the worker reads their results for the task only when there are some.
local function claim_record(id, f, attempt, now)
  local spec, origin = '', ''
  local sid = f[7]
  if sid and sid ~= '' then
    local sf = redis.call('HMGET', K.series(sid), 'spec', 'origin')
    spec, origin = sf[1] or '', sf[2] or ''
  end
  return {id, f[2], f[4], tostring(attempt), tostring(now), f[6], f[3], f[1], sid, f[8], f[9],
    spec, origin, f[11] or f[10] or ''}
end

-- Take one task for the instance (the caller took it out of its index).
local function take(inst, id, f, now, out)
  local deadline = now + tonumber(f[3]) + GRACE_MS
  local attempt = (tonumber(f[5]) or 0) + 1
  redis.call('HSET', K.task(id), 'status', 'running', 'started_at', now, 'instance', inst,
    'deadline', deadline, 'attempt', attempt)
  redis.call('ZADD', K.running(), deadline, id)
  redis.call('SADD', K.instance_tasks(inst), id)
  emit('running', id, {'instance', inst})
  out[#out + 1] = claim_record(id, f, attempt, now)
end

-- One read for the fit test and the record both.
local function read_task(id)
  return redis.call('HMGET', K.task(id), 'slots', 'job', 'max_ms', 'args', 'attempt',
    'start_at', 'series', 'last_completed_at', 'skipped_runs', 'start_after', 'parents')
end


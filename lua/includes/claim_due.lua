-- claim_due(inst, max_count, now, cap): claim due tasks that fit the instance's free slots, in
-- due order, and say when the next is due (claim.lua's reply, see its header). `cap` (a
-- number, or negative for none) bounds the free slots: in a namespace of several
-- partitions the instance's hash counts only this partition's tasks, and the worker, which
-- knows all it runs, passes what it has free over all of them.
-- include: now, wake_sleepers, emit

local GRACE_MS = 60000          -- reaper backstop: deadline = start + max duration + this
local SCAN_LIMIT = 256          -- due entries one claim looks at

-- The claim record of a task (see claim.lua) from its fields as claim read them:
-- f = {slots, job, max_ms, args, attempt, start_at, series, last_completed_at,
-- skipped_runs}, with the new attempt and start time. The id is the key, not a field.
local function claim_record(id, f, attempt, now)
  local spec, origin = '', ''
  local sid = f[7]
  if sid and sid ~= '' then
    local sf = redis.call('HMGET', K.series(sid), 'spec', 'origin')
    spec, origin = sf[1] or '', sf[2] or ''
  end
  return {id, f[2], f[4], tostring(attempt), tostring(now), f[6], f[3], f[1], sid, f[8], f[9],
    spec, origin}
end

-- Claim due tasks that fit the instance's free slots, in due order.
local function claim_due(inst, max_count, now, cap)
  local ih = K.instance(inst)
  redis.call('DEL', K.wake(inst))
  local ifields = redis.call('HMGET', ih, 'slots_total', 'slots_used', 'draining')
  local free = tonumber(ifields[1]) - tonumber(ifields[2])
  if cap >= 0 and cap < free then free = cap end
  local out = {}
  local took = 0
  local ids = {}
  if max_count > 0 and free > 0 and ifields[3] ~= '1' then
    -- Look a little past what we want, for tasks that don't fit or aren't offered here.
    local window = math.min(SCAN_LIMIT, max_count + 16)
    ids = redis.call('ZRANGEBYSCORE', K.due(), '-inf', now, 'LIMIT', 0, window)
    local jobs_key = K.instance_jobs(inst)
    for _, id in ipairs(ids) do
      local tk = K.task(id)
      -- One read for the fit test and the record both.
      local f = redis.call('HMGET', tk, 'slots', 'job', 'max_ms', 'args', 'attempt', 'start_at',
        'series', 'last_completed_at', 'skipped_runs')
      local slots = tonumber(f[1])
      if slots <= free and redis.call('SISMEMBER', jobs_key, f[2]) == 1 then
        local deadline = now + tonumber(f[3]) + GRACE_MS
        local attempt = (tonumber(f[5]) or 0) + 1
        redis.call('ZREM', K.due(), id)
        redis.call('HSET', tk, 'status', 'running', 'started_at', now, 'instance', inst,
          'deadline', deadline, 'attempt', attempt)
        redis.call('ZADD', K.running(), deadline, id)
        redis.call('SADD', K.instance_tasks(inst), id)
        emit('running', id, {'instance', inst})
        free = free - slots
        took = took + slots
        out[#out + 1] = claim_record(id, f, attempt, now)
        if #out >= max_count or free <= 0 then break end
      end
    end
    if took > 0 then redis.call('HINCRBY', ih, 'slots_used', took) end
  end
  -- More is due than this instance took if it passed over any due id it read (they
  -- are still due); else the earliest left says: if it is due, more is; else it is next.
  local nxt = {}
  local more_due = #ids > #out
  if not more_due then
    nxt = redis.call('ZRANGE', K.due(), 0, 0, 'WITHSCORES')
    more_due = #nxt > 0 and tonumber(nxt[2]) <= now
  end
  if more_due then
    if #out > 0 then
      -- Let the idle ones look too (not itself: it knows, and a push to its own list
      -- would only bounce its outstanding BLPOP).
      wake_sleepers(now - 1, inst)
    end
    nxt = redis.call('ZRANGEBYSCORE', K.due(), '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  end
  local next_due = -1
  if #nxt > 0 then next_due = tonumber(nxt[2]) end
  if next_due >= 0 then
    redis.call('ZADD', K.sleepers(), next_due, inst)
  else
    redis.call('ZADD', K.sleepers(), '+inf', inst)
  end
  local ck = K.instance_cancel(inst)
  local cancels = redis.call('SMEMBERS', ck)
  return {OK, now, next_due, cancels, out, NOW_US_PAST_MS}
end

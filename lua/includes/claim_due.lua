-- claim_due(inst, max_count, now, cap): claim due tasks that fit the instance's free slots, in
-- due order, and say when the next is due (claim.lua's reply, see its header). `cap` (a
-- number, or negative for none) bounds the free slots: in a namespace of several
-- partitions the instance's hash counts only this partition's tasks, and the worker, which
-- knows all it runs, passes what it has free over all of them.
-- include: now, wake_sleepers, emit, flow

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
    'start_at', 'series', 'last_completed_at', 'skipped_runs')
end

-- The earliest score from `min` on, in the due set (and the open lanes, with `flow`), or -1.
local function earliest(due_key, min, flow)
  local best = -1
  local keys = {due_key}
  if flow then keys[2] = K.lanes() end
  for _, key in ipairs(keys) do
    local head = redis.call('ZRANGEBYSCORE', key, min, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if #head > 0 and (best < 0 or tonumber(head[2]) < best) then best = tonumber(head[2]) end
  end
  return best
end

-- The due tasks and the open lanes whose heads may start, merged by score (a list of
-- {score, id or nil, lane or nil}).
local function due_and_lanes(window, now)
  local ids = redis.call('ZRANGEBYSCORE', K.due(), '-inf', now, 'WITHSCORES', 'LIMIT', 0, window)
  local lanes = redis.call('ZRANGEBYSCORE', K.lanes(), '-inf', now, 'WITHSCORES', 'LIMIT', 0,
    window)
  local merged, i, j = {}, 1, 1
  while i <= #ids or j <= #lanes do
    if j > #lanes or (i <= #ids and tonumber(ids[i + 1]) <= tonumber(lanes[j + 1])) then
      merged[#merged + 1] = {tonumber(ids[i + 1]), ids[i], nil}
      i = i + 2
    else
      merged[#merged + 1] = {tonumber(lanes[j + 1]), nil, lanes[j]}
      j = j + 2
    end
  end
  return merged
end

-- A plain due task of a job that now has a limit or is paused moves into its lane (once).
local function lane_up(id, job, score)
  if redis.call('HEXISTS', K.flow(), job) == 0
      and redis.call('HEXISTS', K.paused(), 'job\t' .. job) == 0 then
    return false
  end
  local lane = job .. '\t'
  redis.call('ZREM', K.due(), id)
  redis.call('HSET', K.task(id), 'lane', lane)
  lane_add(lane, id, score)
  return true
end

-- The id of an open lane's head if it may start now, else nil (and the lane is scored
-- again by its head: the head it had was cancelled, or the lane is empty and closes).
local function lane_head(lane, now)
  local head = redis.call('ZRANGE', K.lane(lane), 0, 0, 'WITHSCORES')
  if #head == 0 then
    redis.call('ZREM', K.lanes(), lane)
    return nil
  end
  if tonumber(head[2]) <= now then return head[1] end
  redis.call('ZADD', K.lanes(), head[2], lane)
  return nil
end

-- The claim where lanes exist (see flow): due tasks and lane heads in score order, each
-- lane through its gates; a lane taken from is scored `now` and may be read again by a
-- later pass. Returns the slots taken and whether it passed over anything due.
local function claim_flow(inst, jobs_key, max_count, free, now, out)
  local took, passed = 0, false
  for _ = 1, 4 do
    local progressed = false
    for _, c in ipairs(due_and_lanes(math.min(SCAN_LIMIT, max_count - #out + 16), now)) do
      local id, lane = c[2], c[3]
      local gate, later
      if lane then gate, later = gate_of(lane, now) end
      if gate then
        lane_park(lane, gate, now)
      elseif later then
        redis.call('ZADD', K.lanes(), later, lane)  -- due again when its rate allows
      else
        if lane then id = lane_head(lane, now) end
        local f = id and read_task(id)
        if f and not lane and lane_up(id, f[2], c[1]) then
          f = nil
        elseif f and tonumber(f[1]) <= free and redis.call('SISMEMBER', jobs_key, f[2]) == 1 then
          redis.call('ZREM', lane and K.lane(lane) or K.due(), id)
          take(inst, id, f, now, out)
          if lane then lane_took(lane, now) end
          free, took, progressed = free - tonumber(f[1]), took + tonumber(f[1]), true
          if #out >= max_count or free <= 0 then return took, passed end
        elseif f then
          passed = true
        end
      end
    end
    if not progressed then break end
  end
  return took, passed
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
  local flow = redis.call('EXISTS', K.lanes(), K.flow(), K.paused()) > 0
  local passed = false
  if flow and max_count > 0 and free > 0 and ifields[3] ~= '1' then
    took, passed = claim_flow(inst, K.instance_jobs(inst), max_count, free, now, out)
    if took > 0 then redis.call('HINCRBY', ih, 'slots_used', took) end
  elseif max_count > 0 and free > 0 and ifields[3] ~= '1' then
    -- Look a little past what we want, for tasks that don't fit or aren't offered here.
    local window = math.min(SCAN_LIMIT, max_count + 16)
    ids = redis.call('ZRANGEBYSCORE', K.due(), '-inf', now, 'LIMIT', 0, window)
    local jobs_key = K.instance_jobs(inst)
    for _, id in ipairs(ids) do
      local f = read_task(id)
      local slots = tonumber(f[1])
      if slots <= free and redis.call('SISMEMBER', jobs_key, f[2]) == 1 then
        redis.call('ZREM', K.due(), id)
        take(inst, id, f, now, out)
        free = free - slots
        took = took + slots
        if #out >= max_count or free <= 0 then break end
      end
    end
    passed = #ids > #out
    if took > 0 then redis.call('HINCRBY', ih, 'slots_used', took) end
  end
  -- More is due than this instance took if it passed over any due task it read (they
  -- are still due); else the earliest left says: if it is due, more is; else it is next.
  local more_due = passed
  local nxt = -1
  if not more_due then
    nxt = earliest(K.due(), '-inf', flow)
    more_due = nxt >= 0 and nxt <= now
  end
  if more_due then
    if #out > 0 then
      -- Let the idle ones look too (not itself: it knows, and a push to its own list
      -- would only bounce its outstanding BLPOP).
      wake_sleepers(now - 1, inst)
    end
    nxt = earliest(K.due(), '(' .. now, flow)
  end
  local next_due = nxt
  if next_due >= 0 then
    redis.call('ZADD', K.sleepers(), next_due, inst)
  else
    redis.call('ZADD', K.sleepers(), '+inf', inst)
  end
  local ck = K.instance_cancel(inst)
  local cancels = redis.call('SMEMBERS', ck)
  return {OK, now, next_due, cancels, out, NOW_US_PAST_MS}
end

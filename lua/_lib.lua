-- Shared helpers, prepended (after the generated key prelude) to every script.
-- Each function does one thing; scripts compose them. Kept inside what both
-- Redis 7 and fakeredis support: no cjson/cmsgpack/bit, one return value.

local GRACE_MS = 60000          -- reaper backstop: deadline = start + max duration + this
local EVENTS_MAXLEN = 10000     -- events stream cap (approximate)
local SCAN_LIMIT = 256          -- due entries one claim looks at
local FINISHED_MAX = 100000     -- finished tasks kept, by count
local FINISHED_AGE_MS = 7 * 24 * 3600 * 1000  -- finished tasks kept, by age
local TRIM_PER_CALL = 20        -- bounded retention work per call
local REQUEST_TTL_MS = 120000   -- how long a schedule request id is remembered, for retries

local OK = 0
local E_LEASE_LOST = -1
local E_NOT_FOUND = -2
local E_ALREADY_ENDED = -3
local E_PARENT_NOT_FOUND = -4
local E_KEY_CONFLICT = -5
local E_STALE = -6

-- Microseconds past the millisecond now_ms() last returned (each script calls it once).
local NOW_US_PAST_MS = 0
local function now_ms()
  local t = redis.call('TIME')
  NOW_US_PAST_MS = tonumber(t[2]) % 1000
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local B32 = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
local function b32(n, width)
  local out = {}
  for i = width, 1, -1 do
    local d = n % 32
    out[i] = string.sub(B32, d + 1, d + 1)
    n = math.floor(n / 32)
  end
  return table.concat(out)
end

-- ULID-shaped: 10 chars of Redis time (ms), 16 of a namespace-wide counter.
local function new_id(now)
  return b32(now, 10) .. b32(redis.call('INCR', K.seq()), 16)
end

local function emit(kind, id, extra)
  local args = {'XADD', K.events(), 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'event', kind, 'id', id}
  if extra then
    for _, v in ipairs(extra) do args[#args + 1] = v end
  end
  redis.call(unpack(args))
end

local function is_terminal(status)
  return status == 'completed' or status == 'failed' or status == 'cancelled'
end

-- Wake idle instances that planned to look later than `at`: all but `except`, if given
-- (a claiming instance, which sets its own entry right after).
local function wake_sleepers(at, except)
  local ids = redis.call('ZRANGEBYSCORE', K.sleepers(), '(' .. at, '+inf')
  local woken = 0
  for _, inst in ipairs(ids) do
    if inst ~= except then
      redis.call('LPUSH', K.wake(inst), '1')
      woken = woken + 1
    end
  end
  if woken > 0 then
    redis.call('ZREMRANGEBYSCORE', K.sleepers(), '(' .. at, '+inf')
  end
end

local function lease_ok(inst, now)
  local exp = redis.call('ZSCORE', K.instances(), inst)
  return exp and tonumber(exp) >= now
end

-- Make a pending task due at `start`, or blocked behind `after`.
local function index_task(id, start, after, now)
  if after and after ~= '' then
    redis.call('SADD', K.waiting(after), id)
    redis.call('ZADD', K.blocked(), now, id)
  else
    redis.call('ZADD', K.due(), start, id)
    wake_sleepers(start)
  end
end

local function trim_finished(now)
  local old = redis.call('ZRANGEBYSCORE', K.finished(), '-inf', now - FINISHED_AGE_MS,
    'LIMIT', 0, TRIM_PER_CALL)
  local over = redis.call('ZCARD', K.finished()) - FINISHED_MAX
  if over > 0 then
    local extra = redis.call('ZRANGE', K.finished(), 0, math.min(over, TRIM_PER_CALL) - 1)
    for _, id in ipairs(extra) do old[#old + 1] = id end
  end
  for _, id in ipairs(old) do
    redis.call('DEL', K.task(id))
    redis.call('ZREM', K.finished(), id)
  end
end

-- Take a task out of its instance's accounting (idempotent).
local function release_slots(id, inst, slots)
  if inst and inst ~= '' and redis.call('SREM', K.instance_tasks(inst), id) == 1 then
    if redis.call('EXISTS', K.instance(inst)) == 1 then
      redis.call('HINCRBY', K.instance(inst), 'slots_used', -slots)
    end
    redis.call('SREM', K.instance_cancel(inst), id)
  end
end

-- Move one task to a terminal state; returns its previous status.
local function close_task(id, status, reason, code, now)
  local tk = K.task(id)
  local f = redis.call('HMGET', tk, 'status', 'instance', 'slots', 'key', 'series')
  local prev = f[1]
  redis.call('ZREM', K.due(), id)
  redis.call('ZREM', K.blocked(), id)
  redis.call('ZREM', K.running(), id)
  if prev == 'running' then
    release_slots(id, f[2], tonumber(f[3]))
  end
  redis.call('HSET', tk, 'status', status, 'ended_at', now, 'reason', reason, 'exit_code', code)
  redis.call('ZADD', K.finished(), now, id)
  emit(status, id, {'reason', reason})
  local key = f[4]
  if key and key ~= '' and (not f[5] or f[5] == '') and redis.call('HGET', K.idem(), key) == id then
    redis.call('HDEL', K.idem(), key)
  end
  return prev
end

-- A failed attempt of a task that opted into retries goes back to the due set, after a
-- backoff, instead of ending. Returns true if it did. The attempt number (the fencing
-- token) keeps counting, so a late report of the old attempt is stale.
local function retry_task(id, reason, code, now)
  local tk = K.task(id)
  local f = redis.call('HMGET', tk, 'attempt', 'retries', 'backoff_ms', 'instance', 'slots',
    'cancel_requested', 'series')
  local attempt = tonumber(f[1]) or 0
  if attempt > (tonumber(f[2]) or 0) then return false end
  -- Work someone asked to stop is not run again.
  if f[6] then return false end
  if f[7] and f[7] ~= '' and redis.call('HGET', K.series(f[7]), 'status') ~= 'active' then
    return false
  end
  local start = now + (tonumber(f[3]) or 1000) * math.pow(2, attempt - 1)
  redis.call('ZREM', K.running(), id)
  release_slots(id, f[4], tonumber(f[5]))
  redis.call('HSET', tk, 'status', 'pending', 'start_at', start, 'last_error', reason,
    'last_exit_code', code)
  index_task(id, start, '', now)
  emit('retry', id, {'attempt', attempt, 'reason', reason})
  return true
end

-- Release or cancel the tasks waiting on `id`, all the way down the chain.
local function settle_dependents(id, status, now)
  local stack = {{id, status}}
  while #stack > 0 do
    local top = table.remove(stack)
    local parent, pstatus = top[1], top[2]
    local wk = K.waiting(parent)
    local deps = redis.call('SMEMBERS', wk)
    redis.call('DEL', wk)
    for _, dep in ipairs(deps) do
      if redis.call('HGET', K.task(dep), 'status') == 'pending' then
        if pstatus == 'completed' then
          redis.call('ZREM', K.blocked(), dep)
          redis.call('HSET', K.task(dep), 'start_at', now)
          index_task(dep, now, '', now)
          emit('released', dep, {'after', parent})
        else
          close_task(dep, 'cancelled', 'dependency ' .. parent .. ' ' .. pstatus, '', now)
          stack[#stack + 1] = {dep, 'cancelled'}
        end
      end
    end
  end
end

-- Fields left out of a task hash when they hold their default (readers assume it):
-- memory per pending task is what bounds a backlog of millions.
local DEFAULTS = {key = '', start_after = '', retries = '0', backoff_ms = '1000',
  last_completed_at = '', skipped_runs = '0', series = '', fp = ''}

-- Create one pending task; `fields` is a flat list of extra hash fields.
local function create_task(id, job, args, slots, max_ms, start, now, fields)
  local h = {'HSET', K.task(id), 'job', job, 'args', args, 'status', 'pending',
    'slots', slots, 'max_ms', max_ms, 'created_at', now, 'start_at', start}
  for i = 1, #fields, 2 do
    local name, value = fields[i], fields[i + 1]
    if value and tostring(value) ~= DEFAULTS[name] then
      h[#h + 1] = name
      h[#h + 1] = value
    end
  end
  redis.call(unpack(h))
end

-- End the series that follow series `sid` (it has no more runs to follow), and theirs.
local function end_followers(sid)
  local stack = {sid}
  while #stack > 0 do
    local parent = table.remove(stack)
    for _, fsid in ipairs(redis.call('SMEMBERS', K.followers(parent))) do
      if redis.call('HGET', K.series(fsid), 'status') == 'active' then
        redis.call('HSET', K.series(fsid), 'status', 'ended')
        emit('series_ended', fsid, {'follows', parent})
        stack[#stack + 1] = fsid
      end
    end
  end
end

-- Give each active follower of series `sid` a run waiting on the parent's run `parent`,
-- and each follower of those a run waiting on that one, all the way down.
local function follow_run(sid, parent, now)
  local stack = {{sid, parent}}
  while #stack > 0 do
    local top = table.remove(stack)
    local psid, prun = top[1], top[2]
    for _, fsid in ipairs(redis.call('SMEMBERS', K.followers(psid))) do
      local fk = K.series(fsid)
      local f = redis.call('HMGET', fk, 'status', 'job', 'args', 'slots', 'max_ms',
        'last_completed_at', 'key', 'retries', 'backoff_ms')
      if f[1] == 'active' then
        local fid = new_id(now)
        create_task(fid, f[2], f[3], f[4], f[5], -1, now,
          {'series', fsid, 'start_after', prun, 'last_completed_at', f[6] or '',
           'key', f[7] or '', 'retries', f[8] or 0, 'backoff_ms', f[9] or 1000})
        index_task(fid, -1, prun, now)
        redis.call('HSET', fk, 'current', fid)
        emit('scheduled', fid, {'series', fsid, 'after', prun})
        stack[#stack + 1] = {fsid, fid}
      end
    end
  end
end

-- Create the next run of series `sid` at `start` (nil: the series has no more runs).
local function next_series_run(sid, start, skipped, now)
  local sk = K.series(sid)
  if not start then
    redis.call('HSET', sk, 'status', 'ended', 'current', '')
    emit('series_ended', sid, {})
    end_followers(sid)
    return nil
  end
  local s = redis.call('HMGET', sk, 'job', 'args', 'slots', 'max_ms', 'last_completed_at', 'key',
    'retries', 'backoff_ms')
  local id = new_id(now)
  create_task(id, s[1], s[2], s[3], s[4], start, now,
    {'series', sid, 'last_completed_at', s[5] or '', 'skipped_runs', skipped, 'key', s[6] or '',
     'retries', s[7] or 0, 'backoff_ms', s[8] or 1000})
  index_task(id, start, '', now)
  redis.call('HSET', sk, 'current', id, 'next_start', start)
  if skipped > 0 then
    redis.call('HINCRBY', sk, 'skipped', skipped)
    emit('skipped', id, {'series', sid, 'count', skipped})
  end
  emit('scheduled', id, {'series', sid})
  follow_run(sid, id, now)
  return id
end

-- After run `id` of a series ended with `status`: book it and create the next run.
-- `start` nil and `provided` false: the caller could not compute it; leave the series alone.
local function continue_series(id, status, start, skipped, now)
  local sid = redis.call('HGET', K.task(id), 'series')
  if not sid or sid == '' then return end
  local sk = K.series(sid)
  local s = redis.call('HMGET', sk, 'status', 'current', 'kind')
  if status == 'completed' then
    redis.call('HSET', sk, 'last_completed_at', now)
  end
  redis.call('HSET', sk, 'last_run', id, 'last_outcome', status, 'last_ended_at', now)
  redis.call('HINCRBY', sk, 'runs', 1)
  if s[1] ~= 'active' or s[2] ~= id or s[3] == 'follower' then
    if s[2] == id then redis.call('HSET', sk, 'current', '') end
    return
  end
  next_series_run(sid, start, skipped, now)
end

-- Next starts the caller computed for series runs: ARGV[first] = n, then n triples
-- (task id, next start in ms or "", skipped runs). Returns id -> {start text, skipped}.
local function read_given(first)
  local given = {}
  local n = tonumber(ARGV[first]) or 0
  for i = 0, n - 1 do
    local b = first + 1 + 3 * i
    given[ARGV[b]] = {ARGV[b + 1], tonumber(ARGV[b + 2]) or 0}
  end
  return given
end

-- Fail a running task that no report will come for (its instance is gone or past the hard
-- deadline), continuing its series. A series run needs its next start from the caller
-- (`given`); without one it is left as is and listed in `needs` ({id, spec, origin,
-- start_at}) for a second call. Returns false only in that case.
local function fail_running(id, reason, given, needs, now)
  local tk = K.task(id)
  if redis.call('HGET', tk, 'status') ~= 'running' then return true end
  if retry_task(id, reason, '', now) then return true end
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
  -- log_url is left as it is: the log of a dead instance's task may already have been
  -- uploaded, by the worker that took over its spool.
  close_task(id, 'failed', reason, '', now)
  continue_series(id, 'failed', start, skipped, now)
  settle_dependents(id, 'failed', now)
  return true
end

-- Remove an instance and everything that belongs to it.
local function drop_instance(inst)
  redis.call('DEL', K.instance(inst), K.instance_jobs(inst), K.instance_tasks(inst),
    K.instance_cancel(inst), K.wake(inst))
  redis.call('ZREM', K.instances(), inst)
  redis.call('ZREM', K.sleepers(), inst)
end

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
local function claim(inst, max_count, now)
  local ih = K.instance(inst)
  redis.call('DEL', K.wake(inst))
  local ifields = redis.call('HMGET', ih, 'slots_total', 'slots_used', 'draining')
  local free = tonumber(ifields[1]) - tonumber(ifields[2])
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

-- bulk: retry or cancel those of the given tasks that match, one bounded batch per call (the
-- caller reads the ids from the state's index and sends at most 50 a call, so a bulk action
-- over 100,000 tasks never holds Redis for long). Each task is judged here, atomically, so a
-- task that changed since it was read is judged as it is now, and a repeated action finds
-- nothing left to do: a retried task records `retried_by`, a cancelled one has ended.
-- KEYS[1]  tagged key prefix
-- ARGV[1]  "retry" (an ended task: a new task, see retry_one) or "cancel" (pending: at once;
--          running: its instance stops it, as cancel.lua does)
-- ARGV[2]  the status a task must have
-- ARGV[3]  job, or "" for any
-- ARGV[4]  group, or "" for any
-- ARGV[5]  earliest end (ms) of a task to retry, or "" for any
-- ARGV[6]  "1": count the matches only (a dry run, nothing written), "0": act
-- ARGV[7]  reason given to a cancelled task
-- ARGV[8..] task ids
-- Returns  {0, tasks matched (acted on, or that would be in a dry run)}
-- Events   scheduled, cancelled, cancel_requested, series_cancelled
-- include: now, is_terminal, emit, retry_one, close_task, settle_dependents, end_series
-- include: signal_wake

local action, want, job, group = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local since = tonumber(ARGV[5])
local dry, reason = ARGV[6] == '1', ARGV[7]
local now = now_ms()
local matched = 0

local function matches(f)
  if f[1] ~= want or (job ~= '' and f[2] ~= job) or (group ~= '' and (f[3] or '') ~= group) then
    return false
  end
  if action == 'retry' then
    return (not f[4] or f[4] == '') and (not since or (tonumber(f[5]) or 0) >= since)
  end
  return want ~= 'running' or not f[6]  -- a stop already asked for is not asked again
end

local function cancel_one(id, f)
  if f[1] == 'running' then
    redis.call('HSET', K.task(id), 'cancel_requested', now)
    redis.call('SADD', K.instance_cancel(f[7]), id)
    signal_wake(f[7])
    emit('cancel_requested', id, {'instance', f[7]})
    return
  end
  -- As cancel.lua: a series' pending run ends the series (a triggered run does not).
  if f[8] and f[8] ~= '' and f[9] ~= '1' then end_series(f[8], reason, now) end
  if redis.call('HGET', K.task(id), 'status') == 'pending' then
    close_task(id, 'cancelled', reason, '', now)
    settle_dependents(id, 'cancelled', now)
  end
end

for i = 8, #ARGV do
  local id = ARGV[i]
  local f = redis.call('HMGET', K.task(id), 'status', 'job', 'group', 'retried_by', 'ended_at',
    'cancel_requested', 'instance', 'series', 'triggered')
  if f[1] and matches(f) then
    matched = matched + 1
    if not dry then
      if action == 'retry' then retry_one(id, now) else cancel_one(id, f) end
    end
  end
end
return {OK, matched}

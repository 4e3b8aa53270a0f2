-- cancel: pending -> cancelled at once; running -> flagged for its instance to stop.
-- KEYS[1]  tagged key prefix
-- ARGV[1]  task id
-- ARGV[2]  "1" to end the task's whole series, "0" otherwise; "s": ARGV[1] is a series id
-- ARGV[3]  reason
-- Returns  {0, status after the call ("cancelled" or "running"), series ended (0|1)};
--          for a series id: {0, "series", 1, its current run or "", that run's status or ""}
-- Errors   {-2} unknown task (or series), {-3, status} already ended (and no series to end)
-- Events   cancelled, cancel_requested, series_cancelled
-- include: now, is_terminal, emit, close_task, settle_dependents, end_series, signal_wake

local id, whole, reason = ARGV[1], ARGV[2] == '1', ARGV[3]
local now = now_ms()
local by_series = ARGV[2] == 's'
local status, inst, sid, triggered
if by_series then
  sid = id
else
  local f = redis.call('HMGET', K.task(id), 'status', 'instance', 'series', 'triggered')
  status, inst, sid, triggered = f[1], f[2], f[3], f[4] == '1'
  if not status then return {E_NOT_FOUND} end
end
local has_series = sid and sid ~= ''
local series_ended = 0

local function end_this_series()
  if end_series(sid, reason, now) == 1 then series_ended = 1 end
end

-- A series named by its id: end it and cancel its pending run. A running run is left to
-- finish (naming the series asks for no further runs; naming the run stops it).
if by_series then
  local st = redis.call('HMGET', K.series(sid), 'status', 'current')
  if not st[1] then return {E_NOT_FOUND} end
  if st[1] ~= 'active' then return {E_ALREADY_ENDED, st[1]} end
  end_this_series()
  local cur = st[2] or ''
  local cur_status = ''
  if cur ~= '' then cur_status = redis.call('HGET', K.task(cur), 'status') or '' end
  return {OK, 'series', series_ended, cur, cur_status}
end

if is_terminal(status) then
  if whole and has_series then
    end_this_series()
    return {OK, status, series_ended}
  end
  return {E_ALREADY_ENDED, status}
end
if status == 'pending' then
  -- Cancelling a series' pending run ends the series: there is no next run. A triggered
  -- run is an extra beside the grid: cancelling it leaves the series as it was.
  if has_series and not triggered then end_this_series() end
  if redis.call('HGET', K.task(id), 'status') == 'pending' then
    close_task(id, 'cancelled', reason, '', now)
    settle_dependents(id, 'cancelled', now)
  end
  return {OK, 'cancelled', series_ended}
end
-- running: its instance kills the process group and reports it cancelled.
if whole and has_series then end_this_series() end
redis.call('HSET', K.task(id), 'cancel_requested', now)
redis.call('SADD', K.instance_cancel(inst), id)
signal_wake(inst)
emit('cancel_requested', id, {'instance', inst})
return {OK, 'running', series_ended}

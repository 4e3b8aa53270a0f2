-- pause: hold back, or let go again, the pending tasks of a job or of a group, or the runs
-- of a series.
-- KEYS[1]  tagged key prefix
-- ARGV[1]  "job", "group" or "series"
-- ARGV[2]  its name
-- ARGV[3]  "1" to pause, "0" to resume
-- ARGV[4]  most lanes a resume reopens in this call (the caller repeats while any are left)
-- Returns  {0, changed (0|1: it was not already so), lanes reopened, lanes still held}
-- Errors   {-2} a series this partition does not have; {-3, status} a series that ended
-- Events   paused, resumed (when changed)
-- The caller checked that a job exists (in the catalog, or as a file of its jobs directory).
-- A paused job's or group's tasks are laned (see flow): its open lanes are parked by the
-- first claim that reads them, and a plain task of a paused job moves into its lane when
-- a claim first reads it, so a paused backlog is read once, never again until resumed.
-- A series' pending run is held (pending in no index, see index_task) and so is every run
-- its series makes while paused; on resume the run is due at its own start, so the
-- worker that runs it applies the series' catch-up policy to the runs it missed.
-- include: now, emit, flow, index_task

local kind, name, pause = ARGV[1], ARGV[2], ARGV[3] == '1'
local now = now_ms()
local field = kind .. '\t' .. name
local gate = 'p\t' .. field

-- Take a series' pending run out of its index (pause), or put it back (resume).
local function hold_run(sid, hold)
  local cur = redis.call('HGET', K.series(sid), 'current')
  if not cur or cur == '' then return end
  local t = redis.call('HMGET', K.task(cur), 'status', 'lane', 'start_at')
  if t[1] ~= 'pending' or redis.call('ZSCORE', K.blocked(), cur) then return end
  if hold then
    redis.call('ZREM', K.due(), cur)
    if t[2] and t[2] ~= '' then lane_drop(t[2], cur) end
    redis.call('ZADD', K.held(), t[3], cur)
  else
    redis.call('ZREM', K.held(), cur)
    index_task(cur, tonumber(t[3]), '', now, t[2] or '', '')  -- resumed: not held
  end
end

if kind == 'series' then
  local status = redis.call('HGET', K.series(name), 'status')
  if not status then return {E_NOT_FOUND} end
  if status ~= 'active' then return {E_ALREADY_ENDED, status} end  -- nothing to hold
  local changed
  if pause then
    changed = redis.call('HSETNX', K.paused_series(), name, now)
    if changed == 1 then
      redis.call('HSET', K.series(name), 'paused', now)
      hold_run(name, true)
    end
  else
    changed = redis.call('HDEL', K.paused_series(), name)
    if changed == 1 then
      redis.call('HDEL', K.series(name), 'paused')
      hold_run(name, false)
    end
  end
  if changed == 1 then emit(pause and 'paused' or 'resumed', name, {'kind', kind}) end
  return {OK, changed, 0, 0}
end
if pause then
  local changed = redis.call('HSETNX', K.paused(), field, now)
  if changed == 1 then emit('paused', name, {'kind', kind}) end
  return {OK, changed, 0, redis.call('ZCARD', K.gate(gate))}
end
local changed = redis.call('HDEL', K.paused(), field)
if changed == 1 then emit('resumed', name, {'kind', kind}) end
local reopened = gate_open(gate, tonumber(ARGV[4]) or 1000)
return {OK, changed, reopened, redis.call('ZCARD', K.gate(gate))}

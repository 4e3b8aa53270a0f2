-- pause: hold back, or let go again, the pending tasks of a job or of a group.
-- KEYS[1]  tagged key prefix
-- ARGV[1]  "job" or "group"
-- ARGV[2]  its name
-- ARGV[3]  "1" to pause, "0" to resume
-- ARGV[4]  most lanes a resume reopens in this call (the caller repeats while any are left)
-- Returns  {0, changed (0|1: it was not already so), lanes reopened, lanes still held}
-- Events   paused, resumed (when changed)
-- The caller checked that a job exists (in the catalog, or as a file of its jobs directory).
-- A paused job's or group's tasks are laned (see flow): its open lanes are parked by the
-- first claim that reads them, and a plain task of a paused job moves into its lane when
-- a claim first reads it, so a paused backlog is read once, never again until resumed.
-- include: now, emit, flow

local kind, name, pause = ARGV[1], ARGV[2], ARGV[3] == '1'
local now = now_ms()
local field = kind .. '\t' .. name
local gate = 'p\t' .. field
if pause then
  local changed = redis.call('HSETNX', K.paused(), field, now)
  if changed == 1 then emit('paused', name, {'kind', kind}) end
  return {OK, changed, 0, redis.call('ZCARD', K.gate(gate))}
end
local changed = redis.call('HDEL', K.paused(), field)
if changed == 1 then emit('resumed', name, {'kind', kind}) end
local reopened = gate_open(gate, tonumber(ARGV[4]) or 1000)
return {OK, changed, reopened, redis.call('ZCARD', K.gate(gate))}

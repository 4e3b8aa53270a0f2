-- retry: a new task with the job, args, group, priority and tags of an ended task, due now
-- and linked by `retry_of`; the old one stays as it ended and records `retried_by`, so a
-- repeated retry (of this task, or a bulk one) makes no second task.
-- KEYS[1]  tagged key prefix
-- ARGV[1]  task id
-- ARGV[2]  request id, or "": a request repeated within REQUEST_TTL_MS returns the task the
--          first one made
-- Returns  {0, new task id, existed (1: the task was retried already, this is that retry),
--          {new task hash, flat}}
-- Errors   {-2} unknown task; {-7, status} the task has not ended (nothing written)
-- Events   scheduled (with retry_of)
-- include: now, is_terminal, retry_one

local id, request = ARGV[1], ARGV[2] or ''
local now = now_ms()
local REQUEST_TTL_MS = 120000

local function made(nid, existed)
  return {OK, nid, existed, redis.call('HGETALL', K.task(nid))}
end

if request ~= '' then
  local m = redis.call('GET', K.request(request))
  if m then return made(m, 0) end
end
local f = redis.call('HMGET', K.task(id), 'status', 'retried_by')
if not f[1] then return {E_NOT_FOUND} end
if not is_terminal(f[1]) then return {E_NOT_ENDED, f[1]} end
-- Its retry, unless that one has since been trimmed by retention.
if f[2] and f[2] ~= '' and redis.call('EXISTS', K.task(f[2])) == 1 then return made(f[2], 1) end
local nid = retry_one(id, now)
if request ~= '' then redis.call('SET', K.request(request), nid, 'PX', REQUEST_TTL_MS) end
return made(nid, 0)

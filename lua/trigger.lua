-- trigger: one extra run of an active series, due now, beside its grid: the series' current
-- run, next start and skipped count do not move. The run is marked `triggered`; it goes
-- through the claim like any task (its job's lane, so the job's limits and a pause of its
-- job or group apply), but a pause of the series itself does not hold it: a trigger is an
-- explicit request to run now (as Temporal's schedule trigger).
-- KEYS[1]  tagged key prefix
-- ARGV[1]  series id
-- ARGV[2]  request id, or "": a request repeated within REQUEST_TTL_MS returns the run the
--          first one made
-- Returns  {0, run id, {run hash, flat}}
-- Errors   {-2} unknown series; {-3, status} the series has ended (nothing written)
-- Events   scheduled (with triggered 1)
-- include: now, new_id, create_task, index_task, emit

local sid, request = ARGV[1], ARGV[2] or ''
local now = now_ms()
local REQUEST_TTL_MS = 120000

local function made(id)
  return {OK, id, redis.call('HGETALL', K.task(id))}
end

if request ~= '' then
  local m = redis.call('GET', K.request(request))
  if m then return made(m) end
end
local sk = K.series(sid)
local s = redis.call('HMGET', sk, 'status', 'job', 'args', 'slots', 'max_ms',
  'last_completed_at', 'retries', 'backoff_ms', 'group', 'priority', 'tags')
if not s[1] then return {E_NOT_FOUND} end
if s[1] ~= 'active' then return {E_ALREADY_ENDED, s[1]} end
local id = new_id(now)
local lane = create_task(id, s[2], s[3], s[4], s[5], now, now, {'series', sid,
  'triggered', '1', 'last_completed_at', s[6] or '', 'retries', s[7] or 0,
  'backoff_ms', s[8] or 1000, 'group', s[9] or '', 'priority', s[10] or 0, 'tags', s[11] or ''})
index_task(id, now, '', now, lane, '')  -- '': not held by a pause of the series
redis.call('HINCRBY', sk, 'triggered', 1)
emit('scheduled', id, {'series', sid, 'triggered', '1'})
if request ~= '' then redis.call('SET', K.request(request), id, 'PX', REQUEST_TTL_MS) end
return made(id)

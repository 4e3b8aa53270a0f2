-- schedule: store a task (and its series, if recurring), index it, wake workers.
-- KEYS[1]  tagged key prefix, e.g. "{perseid}:"
-- ARGV[1]  job name
-- ARGV[2]  args (JSON object text)
-- ARGV[3]  slots
-- ARGV[4]  max duration (ms)
-- ARGV[5]  start: absolute epoch ms, or "" for now
-- ARGV[6]  delay (ms) added to Redis now when ARGV[5] is "" (relative --at)
-- ARGV[7]  idempotency key, or ""
-- ARGV[8]  id of the task this one starts after, or "" (a run of an active series: the new
--          task starts a follower series, one run after each run of that series)
-- ARGV[9]  recurrence spec (JSON text, opaque here), or "" for a one-off task
-- ARGV[10] grid origin (ms) for a recurrence, or "" for the start time
-- ARGV[11] retries after a failure (0: none)
-- ARGV[12] backoff before the first retry (ms), doubling each time
-- ARGV[13] request id, or "": a request repeated within REQUEST_TTL_MS (a client retrying
--          a call whose reply it lost) returns the task the first one made, not a new one
-- ARGV[14] "1": the reply also carries the task's hash (what Client.schedule returns), so
--          the caller needs no second round trip to read it back
-- Returns  {0, task id, existed (0|1), now, start (ms, -1 when waiting)[, {task hash, flat}]}
-- Errors   {-4} parent unknown, {-5, status} parent already ended
-- Events   scheduled

local job, args, slots, max_ms = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local key, after, spec = ARGV[7], ARGV[8], ARGV[9]
local request = ARGV[13] or ''
local now = now_ms()

local function scheduled(id, existed, start)
  if ARGV[14] == '1' then
    return {OK, id, existed, now, start, redis.call('HGETALL', K.task(id))}
  end
  return {OK, id, existed, now, start}
end

if request ~= '' then
  local made = redis.call('GET', K.request(request))
  if made then
    return scheduled(made, 0, tonumber(redis.call('HGET', K.task(made), 'start_at')) or -1)
  end
end

if key ~= '' then
  local target = redis.call('HGET', K.idem(), key)
  if target then
    local s = redis.call('HMGET', K.series(target), 'status', 'current')
    if s[1] == 'active' and s[2] and s[2] ~= '' then
      return scheduled(s[2], 1, tonumber(redis.call('HGET', K.task(s[2]), 'start_at')) or -1)
    end
    local t = redis.call('HMGET', K.task(target), 'status', 'start_at')
    if t[1] and not is_terminal(t[1]) then
      return scheduled(target, 1, tonumber(t[2]) or -1)
    end
  end
end

-- After a run of an active series: follow the series, one run after each of its runs.
local follows = nil
if after ~= '' then
  local p = redis.call('HMGET', K.task(after), 'status', 'series')
  if not p[1] then return {E_PARENT_NOT_FOUND} end
  if is_terminal(p[1]) then return {E_PARENT_ENDED, p[1]} end
  if p[2] and p[2] ~= '' and redis.call('HGET', K.series(p[2]), 'status') == 'active' then
    follows = p[2]
  end
end

local start = now + (tonumber(ARGV[6]) or 0)
if ARGV[5] ~= '' then start = tonumber(ARGV[5]) end
if after ~= '' then start = -1 end

local id = new_id(now)
local fields = {'key', key, 'start_after', after, 'retries', tonumber(ARGV[11]) or 0,
  'backoff_ms', tonumber(ARGV[12]) or 1000}
local sid = nil
if spec ~= '' then
  sid = new_id(now)
  local origin = start
  if ARGV[10] ~= '' then origin = tonumber(ARGV[10]) end
  redis.call('HSET', K.series(sid), 'id', sid, 'job', job, 'args', args, 'slots', slots,
    'max_ms', max_ms, 'spec', spec, 'origin', origin, 'status', 'active', 'current', id,
    'key', key, 'created_at', now, 'runs', 0, 'skipped', 0, 'next_start', start,
    'retries', tonumber(ARGV[11]) or 0, 'backoff_ms', tonumber(ARGV[12]) or 1000)
  redis.call('ZADD', K.series_index(), now, sid)
  fields[#fields + 1] = 'series'
  fields[#fields + 1] = sid
elseif follows then
  sid = new_id(now)
  redis.call('HSET', K.series(sid), 'id', sid, 'job', job, 'args', args, 'slots', slots,
    'max_ms', max_ms, 'spec', '', 'kind', 'follower', 'follows', follows, 'status', 'active',
    'current', id, 'key', key, 'created_at', now, 'runs', 0, 'skipped', 0,
    'retries', tonumber(ARGV[11]) or 0, 'backoff_ms', tonumber(ARGV[12]) or 1000)
  redis.call('ZADD', K.series_index(), now, sid)
  redis.call('SADD', K.followers(follows), sid)
  fields[#fields + 1] = 'series'
  fields[#fields + 1] = sid
end
create_task(id, job, args, slots, max_ms, start, now, fields)
index_task(id, start, after, now)
if key ~= '' then redis.call('HSET', K.idem(), key, sid or id) end
if request ~= '' then redis.call('SET', K.request(request), id, 'PX', REQUEST_TTL_MS) end
emit('scheduled', id, {'job', job})
return scheduled(id, 0, start)

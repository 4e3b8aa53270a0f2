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
-- ARGV[15] fingerprint of the request (opaque here), or "": kept with the idempotency key,
--          so a later request under the key is answered only if it asks for the same thing
-- ARGV[16] the partition index of the --after task when it lives in another partition, or
--          "": the task waits blocked here and a follow delivery goes out through the
--          outbox (the caller checked that the parent exists and runs no active series)
-- ARGV[17] group (a customer, a tenant: see docs/flow.md), or ""; a series' runs keep it
-- ARGV[18] priority, -100 to 100 (higher first among due tasks; "" or 0: none); a series'
--          runs keep it
-- ARGV[19] tags: "key=value" lines, sorted (checked by the caller), or ""; a series' runs
--          keep them
-- Returns  {0, task id, existed (0|1), now, start (ms, -1 when waiting or cancelled),
--          {task hash, flat; empty unless ARGV[14]}, status of the --after task if it had
--          already ended when this ran (else "")}
-- Errors   {-4} parent unknown; {-5, task holding the key, its fingerprint, its series or ""}
--          the key is held by a live task made by a different request (nothing written)
-- Events   scheduled; cancelled, when the --after task had already failed or been cancelled
-- include: now, is_terminal, emit, new_id, create_task, index_task, close_task, outbox_put

local job, args, slots, max_ms = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local key, after, spec = ARGV[7], ARGV[8], ARGV[9]
local retries, backoff = tonumber(ARGV[11]) or 0, tonumber(ARGV[12]) or 1000
local request = ARGV[13] or ''
local fp = ARGV[15] or ''
local group = ARGV[17] or ''
local priority = tonumber(ARGV[18]) or 0
local tags = ARGV[19] or ''
local now = now_ms()
local REQUEST_TTL_MS = 120000   -- how long a schedule request id is remembered, for retries

local function scheduled(id, existed, start, pstatus)
  local h = {}
  if ARGV[14] == '1' then h = redis.call('HGETALL', K.task(id)) end
  return {OK, id, existed, now, start, h, pstatus or ''}
end

local function start_of(id)
  return tonumber(redis.call('HGET', K.task(id), 'start_at')) or -1
end

if request ~= '' then
  local made = redis.call('GET', K.request(request))
  if made then return scheduled(made, 0, start_of(made)) end
end

-- A key held by a live task or series: the same request gets that task, a different one
-- is refused (an idempotency key stands for one request, not for whatever came first).
if key ~= '' then
  local target = redis.call('HGET', K.idem(), key)
  if target then
    local holder, held, sid = nil, '', ''
    local s = redis.call('HMGET', K.series(target), 'status', 'current', 'fp')
    if s[1] == 'active' and s[2] and s[2] ~= '' then
      holder, held, sid = s[2], s[3] or '', target
    else
      local t = redis.call('HMGET', K.task(target), 'status', 'fp')
      if t[1] and not is_terminal(t[1]) then holder, held = target, t[2] or '' end
    end
    if holder then
      -- A key stored without a fingerprint (by an older client) matches any request.
      if fp ~= '' and held ~= '' and held ~= fp then
        return {E_KEY_CONFLICT, holder, held, sid}
      end
      return scheduled(holder, 1, start_of(holder))
    end
  end
end

-- After another task. One that already ended settles the new task now, as its end would
-- have (settle_dependents), so the outcome does not depend on when this call ran:
-- completed -> due now; failed or cancelled -> created cancelled, naming it.
-- A run of an active series: the new task starts a follower series (`follows`).
local follows, pstatus = nil, ''
local remote = ARGV[16] or ''
if after ~= '' and remote == '' then
  local p = redis.call('HMGET', K.task(after), 'status', 'series')
  if not p[1] then return {E_PARENT_NOT_FOUND} end
  if is_terminal(p[1]) then pstatus = p[1] end
  if p[2] and p[2] ~= '' and redis.call('HGET', K.series(p[2]), 'status') == 'active' then
    follows = p[2]
  end
end
local closed = pstatus == 'failed' or pstatus == 'cancelled'

local start = now + (tonumber(ARGV[6]) or 0)
if ARGV[5] ~= '' then start = tonumber(ARGV[5]) end
if after ~= '' then start = -1 end
if pstatus == 'completed' then start = now end

local id = new_id(now)
local fields = {'key', key, 'start_after', after, 'retries', retries, 'backoff_ms', backoff,
  'group', group, 'priority', priority, 'tags', tags}
local sid = nil
if spec ~= '' then
  sid = new_id(now)
  local origin = start
  if ARGV[10] ~= '' then origin = tonumber(ARGV[10]) end
  redis.call('HSET', K.series(sid), 'id', sid, 'job', job, 'args', args, 'slots', slots,
    'max_ms', max_ms, 'spec', spec, 'origin', origin, 'status', 'active', 'current', id,
    'key', key, 'created_at', now, 'runs', 0, 'skipped', 0, 'next_start', start,
    'retries', retries, 'backoff_ms', backoff, 'fp', fp)
  redis.call('ZADD', K.series_index(), now, sid)
  if group ~= '' then redis.call('HSET', K.series(sid), 'group', group) end
  if priority ~= 0 then redis.call('HSET', K.series(sid), 'priority', priority) end
elseif follows then
  sid = new_id(now)
  redis.call('HSET', K.series(sid), 'id', sid, 'job', job, 'args', args, 'slots', slots,
    'max_ms', max_ms, 'spec', '', 'kind', 'follower', 'follows', follows, 'status', 'active',
    'current', id, 'key', key, 'created_at', now, 'runs', 0, 'skipped', 0,
    'retries', retries, 'backoff_ms', backoff, 'fp', fp)
  redis.call('ZADD', K.series_index(), now, sid)
  redis.call('SADD', K.followers(follows), sid)
  if group ~= '' then redis.call('HSET', K.series(sid), 'group', group) end
  if priority ~= 0 then redis.call('HSET', K.series(sid), 'priority', priority) end
else
  -- A one-off task holds its key's fingerprint itself; a series' is in the series.
  fields[#fields + 1] = 'fp'
  fields[#fields + 1] = fp
end
if sid and tags ~= '' then redis.call('HSET', K.series(sid), 'tags', tags) end
if sid then
  fields[#fields + 1] = 'series'
  fields[#fields + 1] = sid
end
local lane = create_task(id, job, args, slots, max_ms, start, now, fields)
emit('scheduled', id, {'job', job})
if closed then
  close_task(id, 'cancelled', 'dependency ' .. after .. ' ' .. pstatus, '', now)
  if sid then redis.call('HSET', K.series(sid), 'current', '') end
elseif pstatus == 'completed' then
  index_task(id, start, '', now, lane, '')  -- a new series is not paused
  emit('released', id, {'after', after})
elseif remote ~= '' then
  -- Its parent's partition learns of it through the outbox (and settles it from there).
  redis.call('ZADD', K.blocked(), now, id)
  outbox_put('follow', remote, after, id, PART, now)
else
  index_task(id, start, after, now, lane, '')
end

-- Following a series from a run that had already ended: that run was settled above, and
-- the series' live run is the next one followed (later ones get theirs from follow_run).
if follows and pstatus ~= '' then
  local cur = redis.call('HGET', K.series(follows), 'current')
  if cur and cur ~= '' and cur ~= after
      and not is_terminal(redis.call('HGET', K.task(cur), 'status') or 'completed') then
    local nid = new_id(now)
    create_task(nid, job, args, slots, max_ms, -1, now, {'series', sid, 'start_after', cur,
      'key', key, 'retries', retries, 'backoff_ms', backoff, 'group', group,
      'priority', priority, 'tags', tags})
    index_task(nid, -1, cur, now)
    redis.call('HSET', K.series(sid), 'current', nid)
    emit('scheduled', nid, {'series', sid, 'after', cur})
  end
end

if key ~= '' and (sid or not closed) then redis.call('HSET', K.idem(), key, sid or id) end
if request ~= '' then redis.call('SET', K.request(request), id, 'PX', REQUEST_TTL_MS) end
if closed then return scheduled(id, 0, -1, pstatus) end
return scheduled(id, 0, start, pstatus)

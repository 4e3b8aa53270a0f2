-- flow: lanes, the gates that hold them back, and the counts that limits read (see
-- docs/flow.md). A task with a group or a priority, or of a job that has a limit or is
-- paused, is laned: it waits in its lane (K.lane(job \t group [\t priority])) by start
-- time, and the claim looks at the lane, not at each task. An open lane is in its
-- priority's open set (K.lanes for 0, else K.plane(p), with p listed in K.prios), scored
-- by when its head may start; a lane a gate holds back (a pause, a full limit) is in that
-- gate's set instead, so a claim never reads a backlog it could not take. A lane with
-- tasks is in exactly one of the two. A group's limit is cheaper: a lane it holds back
-- stays in its open set, parked in place at PARKED, a score no claim reads (they read up
-- to now); the group has a task running (its limit is full), and that task's end brings
-- the group's lanes back, one ZADD per priority in use.
-- include: wake_sleepers, flow_counts

-- Above any time in ms (year 33658).
local PARKED = 1e15

-- Wake the idle instances for a lane due at `at`, once per call: a second wake at a
-- later time finds no sleeper the first left (only a claim adds one, for itself, at its
-- end).
local WOKEN = nil
local function lane_wake(at)
  if WOKEN and WOKEN <= at then return end
  wake_sleepers(at)
  WOKEN = at
end

-- A lane's job, group and priority (kept per call: a claim meets the same lanes often).
local PARTS = {}
local function lane_parts(lane)
  local p = PARTS[lane]
  if not p then
    local job, group, prio = string.match(lane, '^([^\t]*)\t([^\t]*)\t?(-?%d*)$')
    p = {job, group, tonumber(prio) or 0}
    PARTS[lane] = p
  end
  return p[1], p[2], p[3]
end

-- What a group's limits count: its job and group (the lanes of all its priorities).
local function group_key(job, group)
  return job .. '\t' .. group
end

-- The set an open lane of priority `prio` is in.
local function open_key(prio)
  if prio == 0 then return K.lanes() end
  return K.plane(prio)
end

-- The priorities other than 0 that have open lanes (K.prios), read once per call and
-- kept as lanes open.
local PRIOS = nil
local function prios_in_use()
  if not PRIOS then PRIOS = redis.call('ZRANGE', K.prios(), 0, -1) end
  return PRIOS
end

-- Open a lane at `score` (`mode`: a ZADD flag such as 'LT', or nil).
local function lane_open(lane, score, mode)
  local _, _, prio = lane_parts(lane)
  if prio ~= 0 and redis.call('ZADD', K.prios(), prio, prio) == 1 and PRIOS then
    PRIOS[#PRIOS + 1] = tostring(prio)
  end
  if mode then
    redis.call('ZADD', open_key(prio), mode, score, lane)
  else
    redis.call('ZADD', open_key(prio), score, lane)
  end
end

local function lane_close(lane)
  local _, _, prio = lane_parts(lane)
  redis.call('ZREM', open_key(prio), lane)
end

-- A pending task enters its lane (and the held index, which lists the pending tasks that
-- are not in the due set); the lane opens unless a gate holds it.
local function lane_add(lane, id, start)
  redis.call('ZADD', K.lane(lane), start, id)
  redis.call('ZADD', K.held(), start, id)
  local _, _, prio = lane_parts(lane)
  local score = tonumber(redis.call('ZSCORE', open_key(prio), lane))
  if score and score >= PARKED then return end  -- parked in place: it stays so
  if score or redis.call('HEXISTS', K.lane_gate(), lane) == 0 then
    lane_open(lane, start, 'LT')
    lane_wake(start)
  end
end

-- Each job's limits and each job's or group's pause, read once per script call (a call
-- that publishes limits or pauses drops what it changes): a claim meets the same few
-- jobs again and again.
local LIMITS, PAUSED = {}, {}
local ANY_PAUSE = nil  -- whether anything is paused at all (read once per call)

-- A job's limits: concurrency, group concurrency (0: none), and the ms between two starts
-- its rate and its group rate allow (0: no rate).
local function limits_of(job)
  local l = LIMITS[job]
  if not l then
    local lim = redis.call('HGET', K.flow(), job) or ''
    local c, g, r, gr = string.match(lim, '^(%d+)\t(%d+)\t?([%d.]*)\t?([%d.]*)$')
    l = {tonumber(c) or 0, tonumber(g) or 0, tonumber(r) or 0, tonumber(gr) or 0}
    LIMITS[job] = l
  end
  return l[1], l[2], l[3], l[4]
end

-- The pause that holds a (job, group) back, as a gate name, or false.
local function pause_of(job, group)
  if ANY_PAUSE == nil then ANY_PAUSE = redis.call('EXISTS', K.paused()) == 1 end
  if not ANY_PAUSE then return false end
  local key = job .. '\t' .. group
  local p = PAUSED[key]
  if p == nil then
    local f = redis.call('HMGET', K.paused(), 'job\t' .. job, 'group\t' .. group)
    p = false
    if f[1] then p = 'p\tjob\t' .. job end
    if not p and group ~= '' and f[2] then p = 'p\tgroup\t' .. group end
    PAUSED[key] = p
  end
  return p
end

-- Whether a job's plain tasks belong in a lane: it has a limit, or it is paused.
local function job_laned(job)
  local c, g, r, gr = limits_of(job)
  return c > 0 or g > 0 or r > 0 or gr > 0 or pause_of(job, '') ~= false
end

-- The lane of a new task of `job` in `group` at `prio`, or '' for a plain task (in the
-- due set).
local function lane_of(job, group, prio)
  local lane = group_key(job, group)
  if prio ~= 0 then return lane .. '\t' .. prio end
  if group ~= '' then return lane end
  if redis.call('EXISTS', K.flow(), K.paused()) == 0 or not job_laned(job) then return '' end
  return lane
end

-- Whether the job's concurrency has room for one more.
local function job_has_room(job)
  local c = limits_of(job)
  return c == 0 or count_of(job) < c
end

-- The pause that holds a lane back now, as a gate, or nil; past it, the time its rates
-- allow its next start, if later than now. (Its limits are checked as its head is taken:
-- see reserve.)
local function gate_of(lane, now)
  local job, group = lane_parts(lane)
  local paused = pause_of(job, group)
  if paused then return paused end
  local _, _, r, gr = limits_of(job)
  if r == 0 and (gr == 0 or group == '') then return nil end
  local gk = group_key(job, group)
  -- A rate is a minimum spacing of starts on Redis time (GCRA without burst): the next
  -- start may come when the last one's slot has passed.
  local at = redis.call('HMGET', K.flow_rate(), job, gk)
  local allowed = math.max(tonumber(at[1]) or 0, group ~= '' and tonumber(at[2]) or 0)
  if allowed > now then return nil, allowed end
  return nil
end

-- Reopen up to n lanes a gate holds, the highest priority and then the longest held first,
-- at their heads' start times (so they go before lanes taken from since). Returns how
-- many it reopened.
local function gate_open(gate, n)
  local popped = redis.call('ZPOPMIN', K.gate(gate), n)
  for i = 1, #popped, 2 do
    local lane = popped[i]
    redis.call('HDEL', K.lane_gate(), lane)
    local head = redis.call('ZRANGE', K.lane(lane), 0, 0, 'WITHSCORES')
    if #head > 0 then
      lane_open(lane, head[2])
      lane_wake(tonumber(head[2]))
    end
  end
  return #popped / 2
end

-- A job with a concurrency limit and room under it lets the next lane its gate holds go
-- (a lane that a freed unit reopened may not use it: a pause or its group's limit holds
-- it, or it emptied).
local function pass_unit_on(job)
  local c = limits_of(job)
  if c > 0 and job_has_room(job) then gate_open('c\t' .. job, 1) end
end

-- A gate holds the lane back: out of its open set, into the gate's set (by priority, then
-- by when); a group's limit parks it in place (see the header). A lane that a job's
-- freed unit had reopened and a pause or its group's limit now holds passes that unit on
-- to the next lane the job's gate holds.
local function lane_park(lane, gate, now)
  local job, _, prio = lane_parts(lane)
  local kind = string.sub(gate, 1, 1)
  if kind == 'g' then
    redis.call('ZADD', open_key(prio), PARKED, lane)
  else
    lane_close(lane)
    redis.call('ZADD', K.gate(gate), (100 - prio) * 1e13 + now, lane)
    redis.call('HSET', K.lane_gate(), lane, gate)
  end
  if kind ~= 'c' then pass_unit_on(job) end
end

-- Advance the next start a rate allows, for `name` (a job, or a job and group).
local function rate_took(name, interval, now)
  local last = tonumber(redis.call('HGET', K.flow_rate(), name)) or 0
  redis.call('HSET', K.flow_rate(), name, math.max(last, now) + interval)
end

-- The counts a lane's limits read (see flow_counts), appended to `names`.
local function count_names(lane, names)
  local job, group = lane_parts(lane)
  local c, g = limits_of(job)
  if g > 0 and group ~= '' then names[#names + 1] = group_key(job, group) end
  if c > 0 then names[#names + 1] = job end
end

-- Count the lane's head running, if its limits have room: its group's, then its job's.
-- Only what a limit reads is counted (publish_limits recounts when a limit appears).
-- Returns the gate of a full limit (nothing counted), else nil and the group's count
-- now (0: no group limit).
local function reserve(lane)
  local job, group = lane_parts(lane)
  local c, g = limits_of(job)
  local gk = nil
  if g > 0 and group ~= '' then
    gk = group_key(job, group)
    if count_of(gk) >= g then return 'g\t' .. gk end
  end
  if c > 0 and count_of(job) >= c then return 'c\t' .. job end
  if c > 0 then count_up(job) end
  if not gk then return nil, 0 end
  count_up(gk)
  return nil, COUNTS[gk]
end

-- The lane's head was taken and counted (`in_group`: its group's count, see reserve;
-- `next_start`: its next head's start, or nil if none is left): score the lane by its
-- next head, not before now (so lanes that waited since go first: fairness across
-- groups). A group now at its limit parks at once.
local function lane_took(lane, now, next_start, in_group)
  local job, group = lane_parts(lane)
  local gk = group_key(job, group)
  local _, g, r, gr = limits_of(job)
  if r > 0 then rate_took(job, r, now) end
  if gr > 0 and group ~= '' then rate_took(gk, gr, now) end
  if not next_start then
    lane_close(lane)
  elseif g > 0 and group ~= '' and in_group >= g then
    lane_park(lane, 'g\t' .. gk, now)  -- in place: the task just taken brings it back
  else
    lane_open(lane, math.max(next_start, now))
  end
end

-- A group's lanes parked in place come back, scored now: behind the lanes that waited, as
-- a lane just taken from goes. One ZADD per priority in use, which lowers only (LT) a
-- lane that is open (XX): an open one scored later (its rate, or a head not due yet) is
-- read once more, and scored again by the claim that reads it.
-- A gate set of the group is what a version before parking in place left (or a worker of
-- that version still running beside this one, in a rolling update, parks into): it opens
-- too, or its lanes would wait for an end that no longer reopens them.
local function group_unpark(gk, now)
  local back = redis.call('ZADD', K.lanes(), 'XX', 'LT', 'CH', now, gk)
  for _, p in ipairs(prios_in_use()) do
    back = back + redis.call('ZADD', K.plane(p), 'XX', 'LT', 'CH', now, gk .. '\t' .. p)
  end
  if back > 0 then lane_wake(now) end
  gate_open('g\t' .. gk, 1000)
end

-- A laned task stopped running (ended, or back to pending for a retry): its units are
-- free; its group's lanes parked in place and one lane of its job's gate reopen.
local function lane_release(lane, now)
  if not lane or lane == '' then return end
  local job, group = lane_parts(lane)
  local gk = group_key(job, group)
  local c, g = limits_of(job)
  local names = {}
  if c > 0 then names[#names + 1] = job end
  if g > 0 and group ~= '' then names[#names + 1] = gk end
  for _, name in ipairs(names) do count_down(name) end
  if g > 0 and group ~= '' then group_unpark(gk, now) end
  if c > 0 then gate_open('c\t' .. job, 1) end
end

-- A pending laned task leaves its lane (cancelled); an emptied lane leaves wherever it was.
-- An emptied open lane may hold the unit a freed one reopened it with: it passes it on.
local function lane_drop(lane, id)
  redis.call('ZREM', K.lane(lane), id)
  redis.call('ZREM', K.held(), id)
  if redis.call('EXISTS', K.lane(lane)) == 1 then return end
  lane_close(lane)
  local gate = redis.call('HGET', K.lane_gate(), lane)
  if gate then
    redis.call('ZREM', K.gate(gate), lane)
    redis.call('HDEL', K.lane_gate(), lane)
  end
  pass_unit_on(lane_parts(lane))
end

-- The ms between two starts a rate text allows ("10/s", "30/m", "100/h"; 0: none).
local RATE_WINDOWS = {s = 1000, m = 60000, h = 3600000}
local function rate_interval(text)
  local n, unit = string.match(text or '', '^(%d+)/([smh])$')
  if not n or tonumber(n) == 0 then return 0 end
  return RATE_WINDOWS[unit] / tonumber(n)
end

-- Count the running tasks of `job` again, per job and per group: a limit that was not
-- there did not count them (lane_took), one that goes away leaves no count behind. A
-- plain task running now joins its lane, so that its end is counted (lane_release).
local function recount(job, c, g)
  counts_forget()
  redis.call('HDEL', K.flow_running(), job)
  local prefix = job .. '\t'
  for _, name in ipairs(redis.call('HKEYS', K.flow_running())) do
    if string.sub(name, 1, #prefix) == prefix then redis.call('HDEL', K.flow_running(), name) end
  end
  for _, id in ipairs(redis.call('ZRANGE', K.running(), 0, -1)) do
    local t = redis.call('HMGET', K.task(id), 'job', 'lane')
    if t[1] == job then
      if not t[2] or t[2] == '' then
        t[2] = group_key(job, '')
        redis.call('HSET', K.task(id), 'lane', t[2])
      end
      local _, group = lane_parts(t[2])
      if c > 0 then redis.call('HINCRBY', K.flow_running(), job, 1) end
      if g > 0 and group ~= '' then
        redis.call('HINCRBY', K.flow_running(), group_key(job, group), 1)
      end
    end
  end
end

-- The job's lanes parked in place whose group has room under `g` (0: the group limit went
-- away, all of them) come back: no end of a task would bring them back. With a limit, this
-- repairs a lane whose group's end went by without unparking it (a reaper of a version
-- before parking in place, in a rolling update); each publish of the job runs it.
local function unpark_job(job, g)
  local now = tonumber(redis.call('TIME')[1]) * 1000
  local keys = {K.lanes()}
  for _, p in ipairs(prios_in_use()) do keys[#keys + 1] = K.plane(p) end
  for _, key in ipairs(keys) do
    for _, lane in ipairs(redis.call('ZRANGEBYSCORE', key, PARKED, '+inf')) do
      local j, group = lane_parts(lane)
      if j == job and (g == 0 or count_of(group_key(j, group)) < g) then
        redis.call('ZADD', key, now, lane)
      end
    end
  end
  lane_wake(now)
end

-- A worker published job `name`'s definition (JSON text): keep the claim's copy of its
-- limits (counting its running tasks again if what is counted changes); a raised job
-- limit reopens the lanes it held back.
local function publish_limits(name, def)
  local d = cjson.decode(def)
  local old_c, old_g = limits_of(name)
  LIMITS[name] = nil
  local c, g = tonumber(d.concurrency) or 0, tonumber(d.group_concurrency) or 0
  local r, gr = rate_interval(d.rate), rate_interval(d.group_rate)
  if c > 0 or g > 0 or r > 0 or gr > 0 then
    redis.call('HSET', K.flow(), name, table.concat({c, g, r, gr}, '\t'))
  else
    redis.call('HDEL', K.flow(), name)
  end
  if (old_c > 0) ~= (c > 0) or (old_g > 0) ~= (g > 0) then recount(name, c, g) end
  if c == 0 or job_has_room(name) then gate_open('c\t' .. name, 1000) end
  if old_g > 0 and g == 0 then unpark_job(name, 0) elseif g > 0 then unpark_job(name, g) end
end

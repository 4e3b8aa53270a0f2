-- claim_flow: the claim where lanes exist (see flow): lane heads by priority, then due
-- tasks and lane heads of priority 0 merged by score, then the lanes of negative
-- priorities; each lane through its gates.
-- include: claim_take, flow

local SCAN_LIMIT = 256          -- due entries and lanes one pass looks at

-- The priorities that have open lanes, highest first (an emptied one is dropped).
local function priorities()
  local levels = redis.call('ZRANGE', K.prios(), 0, -1)
  local out = {}
  for i = #levels, 1, -1 do
    local p = tonumber(levels[i])
    if redis.call('EXISTS', K.plane(p)) == 1 then
      out[#out + 1] = p
    else
      redis.call('ZREM', K.prios(), levels[i])
    end
  end
  return out
end

-- The earliest score from `min` on in the due set and every open lane set, or -1 (a lane
-- parked in place is due at no time).
local function earliest(min)
  local keys = {K.due(), K.lanes()}
  for _, p in ipairs(priorities()) do keys[#keys + 1] = K.plane(p) end
  local best = -1
  for _, key in ipairs(keys) do
    local head = redis.call('ZRANGEBYSCORE', key, min, '(' .. PARKED, 'WITHSCORES', 'LIMIT',
      0, 1)
    if #head > 0 and (best < 0 or tonumber(head[2]) < best) then best = tonumber(head[2]) end
  end
  return best
end

-- Append the open lanes of priority `p` whose heads may start to `out`, by score.
local function lanes_at(p, window, now, out)
  local lanes = redis.call('ZRANGEBYSCORE', open_key(p), '-inf', now, 'WITHSCORES', 'LIMIT', 0,
    window)
  for j = 1, #lanes, 2 do out[#out + 1] = {tonumber(lanes[j + 1]), nil, lanes[j]} end
end

-- Append the due tasks and the open lanes of priority 0 to `out`, merged by score.
local function due_and_lanes(window, now, out)
  local ids = redis.call('ZRANGEBYSCORE', K.due(), '-inf', now, 'WITHSCORES', 'LIMIT', 0, window)
  local lanes = redis.call('ZRANGEBYSCORE', K.lanes(), '-inf', now, 'WITHSCORES', 'LIMIT', 0,
    window)
  local i, j = 1, 1
  while i <= #ids or j <= #lanes do
    if j > #lanes or (i <= #ids and tonumber(ids[i + 1]) <= tonumber(lanes[j + 1])) then
      out[#out + 1] = {tonumber(ids[i + 1]), ids[i], nil}
      i = i + 2
    else
      out[#out + 1] = {tonumber(lanes[j + 1]), nil, lanes[j]}
      j = j + 2
    end
  end
end

-- The priorities to claim from, in order: those above 0, highest first, then 0 (the due
-- set with the lanes of priority 0), then those below.
local function levels_in_order()
  local out, levels = {}, priorities()
  for _, p in ipairs(levels) do
    if p > 0 then out[#out + 1] = p end
  end
  out[#out + 1] = 0
  for _, p in ipairs(levels) do
    if p < 0 then out[#out + 1] = p end
  end
  return out
end

-- The candidates of one pass at priority `p`, in the order the claim takes them
-- ({score, id, lane}).
local function candidates(p, window, now)
  local out = {}
  if p == 0 then due_and_lanes(window, now, out) else lanes_at(p, window, now, out) end
  return out
end

-- A plain due task of a job that now has a limit or is paused moves into its lane (once),
-- at its start (`score`, read if not given).
local function lane_up(id, job, score)
  if not job_laned(job) then return false end
  local lane = job .. '\t'
  score = score or redis.call('ZSCORE', K.due(), id)
  redis.call('ZREM', K.due(), id)
  redis.call('HSET', K.task(id), 'lane', lane)
  lane_add(lane, id, score)
  return true
end

-- An open lane's head if it may start now, and the start of the one after it (nil if
-- none); else nil, and the lane is scored again by its head (the head it had was
-- cancelled) or closes (it is empty).
local function lane_head(lane, now)
  local head = redis.call('ZRANGE', K.lane(lane), 0, 1, 'WITHSCORES')
  if #head == 0 then
    lane_close(lane)
    return nil
  end
  if tonumber(head[2]) <= now then return head[1], tonumber(head[4]) end
  lane_open(lane, head[2])
  return nil
end

-- One claim state: what is taken, the slots left, and what the pass saw.
local function new_state(max_count, free)
  return {max = max_count, free = free, took = 0, passed = false, moved = false,
    progressed = false, held = {}}
end

-- Try one candidate ({score, id, lane}); true when the claim is full.
local function try(inst, jobs_key, st, c, now, out)
  local id, lane, after = c[2], c[3], nil
  if lane then
    local gate, later = gate_of(lane, now)
    if gate then lane_park(lane, gate, now) return false end
    if later then lane_open(lane, later) return false end  -- due again when its rate allows
    id, after = lane_head(lane, now)
    if not id then return false end
  end
  local f = read_task(id)
  if not lane and lane_up(id, f[2], c[1]) then
    st.moved = true
    return false
  end
  if tonumber(f[1]) > st.free or redis.call('SISMEMBER', jobs_key, f[2]) == 0 then
    st.passed = true
    return false
  end
  local in_group = 0
  if lane then
    local gate
    gate, in_group = reserve(lane)
    if gate then lane_park(lane, gate, now) return false end
    redis.call('ZREM', K.lane(lane), id)
    st.held[#st.held + 1] = id
  else
    redis.call('ZREM', K.due(), id)
  end
  take(inst, id, f, now, out)
  if lane then lane_took(lane, now, after, in_group) end
  st.free, st.took, st.progressed = st.free - tonumber(f[1]), st.took + tonumber(f[1]), true
  return #out >= st.max or st.free <= 0
end

-- Each priority to the end of its passes before the next: a lane taken from is read again
-- before any lower priority is. A claim full with candidates left unread has passed over
-- something due (so the caller need not look for it).
local function claim_levels(inst, jobs_key, st, now, out)
  for _, p in ipairs(levels_in_order()) do
    for _ = 1, 4 do
      st.progressed = false
      local cands = candidates(p, math.min(SCAN_LIMIT, st.max - #out + 16), now)
      local names = {}
      for _, c in ipairs(cands) do
        if c[3] then count_names(c[3], names) end
      end
      counts_read(names)  -- the counts of every lane's limits, in one call
      for i, c in ipairs(cands) do
        if try(inst, jobs_key, st, c, now, out) then
          st.passed = st.passed or i < #cands
          return
        end
      end
      if not (st.progressed or st.moved) then break end
    end
  end
end

-- Claim where lanes exist, priority by priority (see levels_in_order), each lane through
-- its gates; a lane taken from is scored `now` and may be read again by a later pass.
-- Returns the slots taken, whether it passed over anything due, and whether it moved
-- plain tasks into lanes (then more may be due behind them: the caller says so).
local function claim_flow(inst, jobs_key, max_count, free, now, out)
  local st = new_state(max_count, free)
  claim_levels(inst, jobs_key, st, now, out)
  counts_write()
  -- The laned tasks taken leave the held index in one call per 200 (unpack's stack).
  for i = 1, #st.held, 200 do
    redis.call('ZREM', K.held(), unpack(st.held, i, math.min(i + 199, #st.held)))
  end
  return st.took, st.passed, st.moved
end

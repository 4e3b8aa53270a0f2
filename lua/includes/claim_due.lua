-- claim_due(inst, max_count, now, cap): claim due tasks that fit the instance's free slots, in
-- due order, and say when the next is due (claim.lua's reply, see its header). `cap` (a
-- number, or negative for none) bounds the free slots: in a namespace of several
-- partitions the instance's hash counts only this partition's tasks, and the worker, which
-- knows all it runs, passes what it has free over all of them.
-- include: now, wake_sleepers, claim_take, claim_flow

-- The earliest due score from `min` on (with `flow`, of the open lanes too), or -1.
local function earliest_due(min, flow)
  if flow then return earliest(min) end
  local head = redis.call('ZRANGEBYSCORE', K.due(), min, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #head > 0 then return tonumber(head[2]) end
  return -1
end

-- Claim due tasks that fit the instance's free slots, in due order.
local function claim_due(inst, max_count, now, cap)
  local ih = K.instance(inst)
  redis.call('DEL', K.wake(inst))
  local ifields = redis.call('HMGET', ih, 'slots_total', 'slots_used', 'draining')
  local free = tonumber(ifields[1]) - tonumber(ifields[2])
  if cap >= 0 and cap < free then free = cap end
  local out = {}
  local took = 0
  local ids = {}
  -- Open lanes take the flow path; without any, the due set alone, but where a limit or a
  -- pause exists a plain task of its job first moves into its lane (see lane_up).
  local limited = redis.call('EXISTS', K.lanes(), K.prios(), K.flow(), K.paused()) > 0
  local flow = limited and redis.call('EXISTS', K.lanes(), K.prios()) > 0
  local passed, moved = false, false
  if flow and max_count > 0 and free > 0 and ifields[3] ~= '1' then
    took, passed, moved = claim_flow(inst, K.instance_jobs(inst), max_count, free, now, out)
    if took > 0 then redis.call('HINCRBY', ih, 'slots_used', took) end
  elseif max_count > 0 and free > 0 and ifields[3] ~= '1' then
    -- Look a little past what we want, for tasks that don't fit or aren't offered here.
    local window = math.min(SCAN_LIMIT, max_count + 16)
    ids = redis.call('ZRANGEBYSCORE', K.due(), '-inf', now, 'LIMIT', 0, window)
    local jobs_key = K.instance_jobs(inst)
    local moves = 0  -- ids read that moved into their lane
    for _, id in ipairs(ids) do
      local f = read_task(id)
      local slots = tonumber(f[1])
      if limited and lane_up(id, f[2]) then
        moves = moves + 1
      elseif slots <= free and redis.call('SISMEMBER', jobs_key, f[2]) == 1 then
        redis.call('ZREM', K.due(), id)
        take(inst, id, f, now, out)
        free = free - slots
        took = took + slots
        if #out >= max_count or free <= 0 then break end
      end
    end
    moved = moves > 0
    passed = #ids > #out + moves  -- what it read and neither took nor moved is still due
    if took > 0 then redis.call('HINCRBY', ih, 'slots_used', took) end
  end
  -- More is due than this instance took if it passed over any due task it read (they
  -- are still due); else the earliest left says: if it is due, more is; else it is next.
  local more_due = passed
  local nxt = -1
  if not more_due then
    nxt = earliest_due('-inf', flow)
    more_due = nxt >= 0 and nxt <= now
  end
  if more_due then
    if #out > 0 then
      -- Let the idle ones look too (not itself: it knows, and a push to its own list
      -- would only bounce its outstanding BLPOP).
      wake_sleepers(now - 1, inst)
    end
    nxt = earliest_due('(' .. now, flow)
  end
  local next_due = nxt
  -- Plain tasks moved into their lanes this call: what lies behind them is read next call.
  if moved and #out < max_count then next_due = now end
  if next_due >= 0 then
    redis.call('ZADD', K.sleepers(), next_due, inst)
  else
    redis.call('ZADD', K.sleepers(), '+inf', inst)
  end
  local ck = K.instance_cancel(inst)
  local cancels = redis.call('SMEMBERS', ck)
  return {OK, now, next_due, cancels, out, NOW_US_PAST_MS}
end

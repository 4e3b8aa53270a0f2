-- fan_in: a task after several parents (schedule --after A --after B). Its hash holds
-- `parents` (all, comma-separated, in the order given) and `wait_on` (those not yet known
-- completed); it is blocked until `wait_on` is empty, and cancelled, naming the parent, as
-- soon as one parent fails or is cancelled. Parents in this partition hold it in their
-- `waiting` set; parents in another learn of it through a follow delivery (the outbox).
-- include: release_task, close_task, outbox_put

local MAX_PARENTS = 100   -- as api/scheduling.py MAX_PARENTS (the client refuses more first)

-- fan_in_read(first, first_part, others): the parents of a schedule request, read before
-- anything is written. `first_part` is the first parent's partition index ("" for this
-- one), `others` the other parents as "id:partition" items, comma-separated. Returns
-- {err = code} or {list = {{id, partition}...}, left = ids not completed, failed = the
-- first parent here that failed or was cancelled (or nil), fstatus = its status}.
local function fan_in_read(first, first_part, others)
  local list = {{first, tonumber(first_part) or PART}}
  for item in string.gmatch(others, '[^,]+') do
    local c = string.find(item, ':', 1, true)
    if not c then return {err = E_BAD_PARENTS} end
    list[#list + 1] = {string.sub(item, 1, c - 1), tonumber(string.sub(item, c + 1))}
  end
  if #list > MAX_PARENTS then return {err = E_BAD_PARENTS} end
  local seen, left, failed, fstatus = {}, {}, nil, nil
  for _, p in ipairs(list) do
    if seen[p[1]] or not p[2] then return {err = E_BAD_PARENTS} end
    seen[p[1]] = true
    if p[2] == PART then
      local st = redis.call('HGET', K.task(p[1]), 'status')
      if not st then return {err = E_PARENT_NOT_FOUND} end
      if (st == 'failed' or st == 'cancelled') and not failed then failed, fstatus = p[1], st end
      if st ~= 'completed' then left[#left + 1] = p[1] end
    else
      left[#left + 1] = p[1]  -- its end arrives through the outbox, even if it came already
    end
  end
  return {list = list, left = left, failed = failed, fstatus = fstatus}
end

-- fan_in_wait(id, fan, now): block the new task `id` behind the parents it waits on.
local function fan_in_wait(id, fan, now)
  local left = {}
  for _, p in ipairs(fan.left) do left[p] = true end
  for _, p in ipairs(fan.list) do
    if left[p[1]] then
      if p[2] == PART then
        redis.call('SADD', K.waiting(p[1]), id)
      else
        outbox_put('follow', p[2], p[1], id, PART, now)
      end
    end
  end
  redis.call('ZADD', K.blocked(), now, id)
end

-- fan_in_settle(child, parent, pstatus, now): parent `parent` of the fan-in task `child`
-- ended with `pstatus`. Completed: it leaves `wait_on`, and the last one releases the child;
-- else the child is cancelled, naming it. Idempotent (a delivery applied twice, a parent no
-- longer waited on, a child no longer blocked: no change). Returns true if it cancelled.
local function fan_in_settle(child, parent, pstatus, now)
  local tk = K.task(child)
  local w = redis.call('HMGET', tk, 'status', 'wait_on')
  if w[1] ~= 'pending' or not redis.call('ZSCORE', K.blocked(), child) then return false end
  local left, found = {}, false
  for p in string.gmatch(w[2] or '', '[^,]+') do
    if p == parent then found = true else left[#left + 1] = p end
  end
  if not found then return false end
  if pstatus ~= 'completed' then
    close_task(child, 'cancelled', 'dependency ' .. parent .. ' ' .. pstatus, '', now)
    return true
  end
  redis.call('HSET', tk, 'wait_on', table.concat(left, ','))
  if #left == 0 then release_task(child, parent, now) end
  return false
end

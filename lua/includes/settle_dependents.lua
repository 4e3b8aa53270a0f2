-- settle_dependents(id, status, now): release or cancel the tasks waiting on `id`, all the
-- way down the chain; those waiting in another partition get a settle through the outbox.
-- A dependent of several parents (fan_in) is settled by fan_in_settle.
-- include: release_task, close_task, outbox_put, fan_in

local function settle_dependents(id, status, now)
  local stack = {{id, status}}
  while #stack > 0 do
    local top = table.remove(stack)
    local parent, pstatus = top[1], top[2]
    local wk = K.waiting(parent)
    local deps = redis.call('SMEMBERS', wk)
    redis.call('DEL', wk)
    local rk = K.remote_waiting(parent)
    for _, member in ipairs(redis.call('SMEMBERS', rk)) do
      local tab = string.find(member, '\t', 1, true)
      outbox_put('settle', string.sub(member, 1, tab - 1), string.sub(member, tab + 1), parent,
        pstatus, now)
    end
    redis.call('DEL', rk)
    for _, dep in ipairs(deps) do
      local d = redis.call('HMGET', K.task(dep), 'status', 'parents')
      if d[1] == 'pending' and d[2] and d[2] ~= '' then
        if fan_in_settle(dep, parent, pstatus, now) then stack[#stack + 1] = {dep, 'cancelled'} end
      elseif d[1] == 'pending' then
        if pstatus == 'completed' then
          release_task(dep, parent, now)
        else
          close_task(dep, 'cancelled', 'dependency ' .. parent .. ' ' .. pstatus, '', now)
          stack[#stack + 1] = {dep, 'cancelled'}
        end
      end
    end
  end
end

-- settle_dependents(id, status, now): release or cancel the tasks waiting on `id`, all the
-- way down the chain.
-- include: index_task, close_task, emit

local function settle_dependents(id, status, now)
  local stack = {{id, status}}
  while #stack > 0 do
    local top = table.remove(stack)
    local parent, pstatus = top[1], top[2]
    local wk = K.waiting(parent)
    local deps = redis.call('SMEMBERS', wk)
    redis.call('DEL', wk)
    for _, dep in ipairs(deps) do
      if redis.call('HGET', K.task(dep), 'status') == 'pending' then
        if pstatus == 'completed' then
          redis.call('ZREM', K.blocked(), dep)
          redis.call('HSET', K.task(dep), 'start_at', now)
          index_task(dep, now, '', now)
          emit('released', dep, {'after', parent})
        else
          close_task(dep, 'cancelled', 'dependency ' .. parent .. ' ' .. pstatus, '', now)
          stack[#stack + 1] = {dep, 'cancelled'}
        end
      end
    end
  end
end

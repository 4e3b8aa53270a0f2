-- remote_settle(child, parent, pstatus, now): the parent of `child` lives in another
-- partition and ended with `pstatus` (delivered through the outbox); settle the child as
-- settle_dependents would: completed -> due now; else cancelled, naming the parent.
-- Idempotent: a child no longer blocked on that parent is left as it is.
-- A child of several parents is settled by fan_in_settle.
-- include: release_task, close_task, settle_dependents, fan_in

local function remote_settle(child, parent, pstatus, now)
  local f = redis.call('HMGET', K.task(child), 'status', 'start_after', 'parents')
  if f[3] and f[3] ~= '' then
    if fan_in_settle(child, parent, pstatus, now) then settle_dependents(child, 'cancelled', now) end
    return
  end
  if f[1] ~= 'pending' or f[2] ~= parent or not redis.call('ZSCORE', K.blocked(), child) then
    return
  end
  if pstatus == 'completed' then
    release_task(child, parent, now)
  else
    close_task(child, 'cancelled', 'dependency ' .. parent .. ' ' .. pstatus, '', now)
    settle_dependents(child, 'cancelled', now)
  end
end

-- remote_follow(parent, child, from, now): `child`, in partition `from`, waits on `parent`,
-- in this one: remember it, or if the parent already ended (or is gone) send the settle.
-- Idempotent: a repeated delivery adds the same member, or sends a settle that is a no-op.
-- include: is_terminal, outbox_put

local function remote_follow(parent, child, from, now)
  local st = redis.call('HGET', K.task(parent), 'status')
  if not st then
    outbox_put('settle', from, child, parent, 'missing', now)
  elseif is_terminal(st) then
    outbox_put('settle', from, child, parent, st, now)
  else
    redis.call('SADD', K.remote_waiting(parent), from .. '\t' .. child)
  end
end

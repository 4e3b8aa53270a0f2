-- close_task(id, status, reason, code, now): move one task to a terminal state; returns its
-- previous status.
-- include: release_slots, emit, flow

local function close_task(id, status, reason, code, now)
  local tk = K.task(id)
  local f = redis.call('HMGET', tk, 'status', 'instance', 'slots', 'key', 'series', 'lane')
  local prev, lane = f[1], f[6]
  if prev == 'running' then  -- a task is in one index, its state's
    redis.call('ZREM', K.running(), id)
    release_slots(id, f[2], tonumber(f[3]))
    lane_release(lane, now)
  else
    redis.call('ZREM', K.due(), id)
    redis.call('ZREM', K.held(), id)
    redis.call('ZREM', K.blocked(), id)
    if lane and lane ~= '' then lane_drop(lane, id) end
  end
  redis.call('HSET', tk, 'status', status, 'ended_at', now, 'reason', reason, 'exit_code', code)
  redis.call('ZADD', K.finished(), now, id)
  emit(status, id, {'reason', reason})
  local key = f[4]
  if key and key ~= '' and (not f[5] or f[5] == '') and redis.call('HGET', K.idem(), key) == id then
    redis.call('HDEL', K.idem(), key)
  end
  return prev
end

-- index_task(id, start, after, now): make a pending task due at `start`, or blocked
-- behind `after`.
-- include: wake_sleepers

local function index_task(id, start, after, now)
  if after and after ~= '' then
    redis.call('SADD', K.waiting(after), id)
    redis.call('ZADD', K.blocked(), now, id)
  else
    redis.call('ZADD', K.due(), start, id)
    wake_sleepers(start)
  end
end

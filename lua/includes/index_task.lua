-- index_task(id, start, after, now, lane): make a pending task due at `start` (in its lane,
-- if it has one), or blocked behind `after`. `lane`: the task's lane as create_task gave it,
-- or nil to read it from the task. A run of a paused series is held instead: pending in
-- no index, until the series resumes (see pause.lua).
-- include: wake_sleepers, flow

local function index_task(id, start, after, now, lane)
  if after and after ~= '' then
    redis.call('SADD', K.waiting(after), id)
    redis.call('ZADD', K.blocked(), now, id)
    return
  end
  if redis.call('EXISTS', K.paused_series()) == 1 then
    local sid = redis.call('HGET', K.task(id), 'series')
    if sid and redis.call('HEXISTS', K.paused_series(), sid) == 1 then
      redis.call('ZADD', K.held(), start, id)
      return
    end
  end
  if lane == nil then lane = redis.call('HGET', K.task(id), 'lane') or '' end
  if lane ~= '' then
    lane_add(lane, id, start)
  else
    redis.call('ZADD', K.due(), start, id)
    wake_sleepers(start)
  end
end

-- index_task(id, start, after, now, lane, sid): make a pending task due at `start` (in its
-- lane, if it has one), or blocked behind `after`. `lane`: the task's lane as create_task
-- gave it, or nil to read it from the task; `sid`: its series ('' for none), or nil to read
-- it. A run of a paused series is held instead: pending in no index, until the series
-- resumes (see pause.lua).
-- include: wake_sleepers, flow

local function index_task(id, start, after, now, lane, sid)
  if after and after ~= '' then
    redis.call('SADD', K.waiting(after), id)
    redis.call('ZADD', K.blocked(), now, id)
    return
  end
  if sid == nil then sid = redis.call('HGET', K.task(id), 'series') or '' end
  if sid ~= '' and redis.call('HEXISTS', K.paused_series(), sid) == 1 then
    redis.call('ZADD', K.held(), start, id)
    return
  end
  if lane == nil then lane = redis.call('HGET', K.task(id), 'lane') or '' end
  if lane ~= '' then
    lane_add(lane, id, start)
  else
    redis.call('ZADD', K.due(), start, id)
    wake_sleepers(start)
  end
end

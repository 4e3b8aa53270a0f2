-- end_series(sid, reason, now): cancel an active series: no further runs, its key freed, its
-- followers ended, its pending run cancelled with `reason` (a running one finishes).
-- Returns 1 if it ended the series, 0 if the series was not active.
-- include: emit, close_task, settle_dependents, end_followers

local function end_series(sid, reason, now)
  local sk = K.series(sid)
  if redis.call('HGET', sk, 'status') ~= 'active' then return 0 end
  local s = redis.call('HMGET', sk, 'current', 'key')
  redis.call('HSET', sk, 'status', 'cancelled')
  redis.call('HDEL', K.paused_series(), sid)  -- an ended series holds nothing back
  redis.call('HDEL', sk, 'paused')
  if s[2] and s[2] ~= '' and redis.call('HGET', K.idem(), s[2]) == sid then
    redis.call('HDEL', K.idem(), s[2])
  end
  emit('series_cancelled', sid, {})
  end_followers(sid)
  local cur = s[1]
  if cur and cur ~= '' and redis.call('HGET', K.task(cur), 'status') == 'pending' then
    close_task(cur, 'cancelled', reason, '', now)
    settle_dependents(cur, 'cancelled', now)
  end
  return 1
end

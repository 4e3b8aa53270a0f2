-- continue_series(id, status, start, skipped, now): after run `id` of a series ended with
-- `status`, book it and create the next run at `start` (nil: the series has no more runs,
-- unless the caller could not compute it: then the series is left alone).
-- include: new_id, create_task, index_task, emit, end_followers, follow_run

-- Create the next run of series `sid` at `start` (nil: the series has no more runs).
local function next_series_run(sid, start, skipped, now)
  local sk = K.series(sid)
  if not start then
    redis.call('HSET', sk, 'status', 'ended', 'current', '')
    redis.call('HDEL', K.paused_series(), sid)  -- an ended series holds nothing back
    redis.call('HDEL', sk, 'paused')
    emit('series_ended', sid, {})
    end_followers(sid)
    return nil
  end
  local s = redis.call('HMGET', sk, 'job', 'args', 'slots', 'max_ms', 'last_completed_at', 'key',
    'retries', 'backoff_ms', 'group', 'priority', 'tags')
  local id = new_id(now)
  local lane = create_task(id, s[1], s[2], s[3], s[4], start, now,
    {'series', sid, 'last_completed_at', s[5] or '', 'skipped_runs', skipped, 'key', s[6] or '',
     'retries', s[7] or 0, 'backoff_ms', s[8] or 1000, 'group', s[9] or '',
     'priority', s[10] or 0, 'tags', s[11] or ''})
  index_task(id, start, '', now, lane, sid)
  redis.call('HSET', sk, 'current', id, 'next_start', start)
  if skipped > 0 then
    redis.call('HINCRBY', sk, 'skipped', skipped)
    emit('skipped', id, {'series', sid, 'count', skipped})
  end
  emit('scheduled', id, {'series', sid})
  follow_run(sid, id, now)
  return id
end

local function continue_series(id, status, start, skipped, now)
  local sid = redis.call('HGET', K.task(id), 'series')
  if not sid or sid == '' then return end
  local sk = K.series(sid)
  local s = redis.call('HMGET', sk, 'status', 'current', 'kind')
  if status == 'completed' then
    redis.call('HSET', sk, 'last_completed_at', now)
  end
  redis.call('HSET', sk, 'last_run', id, 'last_outcome', status, 'last_ended_at', now)
  redis.call('HINCRBY', sk, 'runs', 1)
  if s[1] ~= 'active' or s[2] ~= id or s[3] == 'follower' then
    if s[2] == id then redis.call('HSET', sk, 'current', '') end
    return
  end
  next_series_run(sid, start, skipped, now)
end

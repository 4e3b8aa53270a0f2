-- retry_task(id, reason, code, now): a failed attempt of a task that opted into retries goes
-- back to the due set, after a backoff, instead of ending. Returns true if it did. The
-- attempt number (the fencing token) keeps counting, so a late report of the old attempt
-- is stale.
-- include: release_slots, index_task, emit, flow

local function retry_task(id, reason, code, now)
  local tk = K.task(id)
  local f = redis.call('HMGET', tk, 'attempt', 'retries', 'backoff_ms', 'instance', 'slots',
    'cancel_requested', 'series', 'lane')
  local attempt = tonumber(f[1]) or 0
  if attempt > (tonumber(f[2]) or 0) then return false end
  -- Work someone asked to stop is not run again.
  if f[6] then return false end
  if f[7] and f[7] ~= '' and redis.call('HGET', K.series(f[7]), 'status') ~= 'active' then
    return false
  end
  local start = now + (tonumber(f[3]) or 1000) * math.pow(2, attempt - 1)
  redis.call('ZREM', K.running(), id)
  release_slots(id, f[4], tonumber(f[5]))
  lane_release(f[8], now)
  redis.call('HSET', tk, 'status', 'pending', 'start_at', start, 'last_error', reason,
    'last_exit_code', code)
  index_task(id, start, '', now, f[8] or '', f[7] or '')
  emit('retry', id, {'attempt', attempt, 'reason', reason})
  return true
end

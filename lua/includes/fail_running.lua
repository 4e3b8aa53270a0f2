-- fail_running(id, reason, given, needs, now): fail a running task that no report will come
-- for (its instance is gone or past the hard deadline), continuing its series. A series run
-- needs its next start from the caller (`given`, see read_given); without one it is left as
-- is and listed in `needs` ({id, spec, origin, start_at}) for a second call. Returns false
-- only in that case.
-- include: retry_task, close_task, continue_series, settle_dependents

local function fail_running(id, reason, given, needs, now)
  local tk = K.task(id)
  if redis.call('HGET', tk, 'status') ~= 'running' then return true end
  if retry_task(id, reason, '', now) then return true end
  local sid = redis.call('HGET', tk, 'series')
  local start, skipped = nil, 0
  if sid and sid ~= '' then
    local s = redis.call('HMGET', K.series(sid), 'status', 'current', 'spec', 'origin')
    if s[1] == 'active' and s[2] == id and s[3] and s[3] ~= '' then
      local g = given[id]
      if not g then
        needs[#needs + 1] = {id, s[3], s[4], redis.call('HGET', tk, 'start_at')}
        return false
      end
      if g[1] ~= '' then start = tonumber(g[1]) end
      skipped = g[2]
    end
  end
  -- log_url is left as it is: the log of a dead instance's task may already have been
  -- uploaded, by the worker that took over its spool.
  close_task(id, 'failed', reason, '', now)
  continue_series(id, 'failed', start, skipped, now)
  settle_dependents(id, 'failed', now)
  return true
end

-- progress: record how far running tasks are (task.progress, coalesced by the task and the
-- worker), for `show`, `tasks` and the events stream.
-- KEYS[1]  tagged key prefix
-- ARGV     groups of 4: task id, fencing token (attempt), fraction (0 to 1), message or ""
-- Returns  {0, number recorded (a task no longer running under that attempt is skipped)}
-- Events   progress
-- include: emit

local recorded = 0
for i = 1, #ARGV, 4 do
  local id, token, fraction, message = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local f = redis.call('HMGET', K.task(id), 'status', 'attempt')
  if f[1] == 'running' and f[2] == token then
    redis.call('HSET', K.task(id), 'progress', fraction, 'progress_msg', message)
    emit('progress', id, {'fraction', fraction, 'message', message})
    recorded = recorded + 1
  end
end
return {OK, recorded}

-- set_log_url: record where tasks' logs went, for the tasks that still exist.
-- KEYS[1]  tagged key prefix
-- ARGV     pairs: task id, log URL (as many pairs as the caller has)
-- Returns  {0, number recorded}

local recorded = 0
for i = 1, #ARGV, 2 do
  if redis.call('EXISTS', K.task(ARGV[i])) == 1 then
    redis.call('HSET', K.task(ARGV[i]), 'log_url', ARGV[i + 1])
    recorded = recorded + 1
  end
end
return {OK, recorded}

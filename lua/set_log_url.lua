-- set_log_url: record where a task's log went, if the task still exists.
-- KEYS[1]  tagged key prefix
-- ARGV[1]  task id
-- ARGV[2]  log URL
-- Returns  {0, 1 if recorded, 0 if the task is gone}

if redis.call('EXISTS', K.task(ARGV[1])) == 0 then return {OK, 0} end
redis.call('HSET', K.task(ARGV[1]), 'log_url', ARGV[2])
return {OK, 1}

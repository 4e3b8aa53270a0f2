-- served: how many live instances there are, and how many of them take tasks of a job.
-- KEYS[1]  tagged key prefix
-- ARGV[1]  job name
-- Returns  {0, live instances, live instances that offer the job and are not draining}
--          (read only: for the client's warning that a task would wait for a worker)
-- include: now

local job = ARGV[1]
local live = redis.call('ZRANGEBYSCORE', K.instances(), now_ms(), '+inf')
local serving = 0
for _, inst in ipairs(live) do
  if redis.call('SISMEMBER', K.instance_jobs(inst), job) == 1
    and redis.call('HGET', K.instance(inst), 'draining') ~= '1' then
    serving = serving + 1
  end
end
return {OK, #live, serving}

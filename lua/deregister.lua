-- deregister: remove an instance that shut down cleanly; fail what it still held.
-- KEYS[1]  tagged key prefix
-- ARGV[1]  instance id
-- ARGV[2]  reason for tasks it still held (e.g. "worker shutdown")
-- Returns  {0, number of tasks failed}
-- Events   failed (per task), instance_down

local inst = ARGV[1]
local now = now_ms()
local ids = redis.call('SMEMBERS', K.instance_tasks(inst))
for _, id in ipairs(ids) do
  if redis.call('HGET', K.task(id), 'status') == 'running' then
    close_task(id, 'failed', ARGV[2], '', now)
    settle_dependents(id, 'failed', now)
  end
end
redis.call('DEL', K.instance(inst), K.instance_jobs(inst), K.instance_tasks(inst),
  K.instance_cancel(inst), K.wake(inst))
redis.call('ZREM', K.instances(), inst)
redis.call('ZREM', K.sleepers(), inst)
emit('instance_down', inst, {})
return {OK, #ids}

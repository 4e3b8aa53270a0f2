-- drop_instance(inst): remove an instance and everything that belongs to it.

local function drop_instance(inst)
  redis.call('DEL', K.instance(inst), K.instance_jobs(inst), K.instance_tasks(inst),
    K.instance_cancel(inst), K.wake(inst))
  redis.call('ZREM', K.instances(), inst)
  redis.call('ZREM', K.sleepers(), inst)
end

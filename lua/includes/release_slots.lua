-- release_slots(id, inst, slots): take a task out of its instance's accounting (idempotent).

local function release_slots(id, inst, slots)
  if inst and inst ~= '' and redis.call('SREM', K.instance_tasks(inst), id) == 1 then
    if redis.call('EXISTS', K.instance(inst)) == 1 then
      redis.call('HINCRBY', K.instance(inst), 'slots_used', -slots)
    end
    redis.call('SREM', K.instance_cancel(inst), id)
  end
end

-- release_task(id, parent, now): a blocked task whose parent completed becomes due now.
-- include: index_task, emit

local function release_task(id, parent, now)
  redis.call('ZREM', K.blocked(), id)
  redis.call('HSET', K.task(id), 'start_at', now)
  index_task(id, now, '', now)
  emit('released', id, {'after', parent})
end

-- outbox_put(kind, target, a, b, c, now): record a delivery to partition `target` (an index)
-- in this partition's outbox, in the same atomic call as the change that needs it, so it
-- cannot be lost; a worker applies it to the target (deliver.lua) and then removes it
-- (outbox_ack.lua). OUTBOX_MADE counts the entries this call made, for its reply.
-- include: new_id

local OUTBOX_MADE = 0

local function outbox_put(kind, target, a, b, c, now)
  local id = new_id(now)
  redis.call('HSET', K.outbox(), id, table.concat({kind, target, a, b, c}, '\t'))
  redis.call('ZADD', K.outbox_at(), now, id)
  OUTBOX_MADE = OUTBOX_MADE + 1
  return id
end

-- outbox_ack: deliveries applied to their target partitions leave this partition's outbox.
-- KEYS[1]  tagged key prefix
-- ARGV     delivery ids
-- Returns  {0, how many were still there}
-- include: now

local removed = 0
for _, id in ipairs(ARGV) do
  removed = removed + redis.call('HDEL', K.outbox(), id)
  redis.call('ZREM', K.outbox_at(), id)
end
return {OK, removed}

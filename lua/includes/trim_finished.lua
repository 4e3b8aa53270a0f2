-- trim_finished(now): drop the oldest finished tasks past the retention limits, a few a call,
-- and their entries in the tag indexes (so those are bounded by retention too).
-- include: tag_index

local FINISHED_MAX = 100000     -- finished tasks kept, by count
local FINISHED_AGE_MS = 7 * 24 * 3600 * 1000  -- finished tasks kept, by age
local TRIM_PER_CALL = 20        -- bounded retention work per call

local function trim_finished(now)
  local old = redis.call('ZRANGEBYSCORE', K.finished(), '-inf', now - FINISHED_AGE_MS,
    'LIMIT', 0, TRIM_PER_CALL)
  local over = redis.call('ZCARD', K.finished()) - FINISHED_MAX
  if over > 0 then
    local extra = redis.call('ZRANGE', K.finished(), 0, math.min(over, TRIM_PER_CALL) - 1)
    for _, id in ipairs(extra) do old[#old + 1] = id end
  end
  for _, id in ipairs(old) do
    tag_index(id, redis.call('HGET', K.task(id), 'tags'), now, false)
    redis.call('DEL', K.task(id))
    redis.call('ZREM', K.finished(), id)
  end
end

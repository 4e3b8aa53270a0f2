-- wake_sleepers(at, except): wake idle instances that planned to look later than `at`: all
-- but `except`, if given (a claiming instance, which sets its own entry right after).
-- include: signal_wake

local function wake_sleepers(at, except)
  local ids = redis.call('ZRANGEBYSCORE', K.sleepers(), '(' .. at, '+inf')
  local woken = 0
  for _, inst in ipairs(ids) do
    if inst ~= except then
      signal_wake(inst)
      woken = woken + 1
    end
  end
  if woken > 0 then
    redis.call('ZREMRANGEBYSCORE', K.sleepers(), '(' .. at, '+inf')
  end
end

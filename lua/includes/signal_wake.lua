-- signal_wake(inst): signal an idle instance to look for work. With one partition the instance
-- blocks on its wake list; with several it is subscribed to its wake channels (a BLPOP
-- cannot span partitions), so the signal is published on the same name.

local function signal_wake(inst)
  if PARTITIONED then
    redis.call('PUBLISH', K.wake(inst), '1')
  else
    redis.call('LPUSH', K.wake(inst), '1')
  end
end

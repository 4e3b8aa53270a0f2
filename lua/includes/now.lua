-- now_ms(): Redis's clock in ms; NOW_US_PAST_MS: the microseconds past that ms (each
-- script calls now_ms once, at its start).

local NOW_US_PAST_MS = 0
local function now_ms()
  local t = redis.call('TIME')
  NOW_US_PAST_MS = tonumber(t[2]) % 1000
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

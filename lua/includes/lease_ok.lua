-- lease_ok(inst, now): the instance is registered and its lease has not lapsed.

local function lease_ok(inst, now)
  local exp = redis.call('ZSCORE', K.instances(), inst)
  return exp and tonumber(exp) >= now
end

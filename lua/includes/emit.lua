-- emit(kind, id, extra): one entry on the capped events stream.

local EVENTS_MAXLEN = 10000     -- events stream cap (approximate)

local function emit(kind, id, extra)
  local args = {'XADD', K.events(), 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'event', kind, 'id', id}
  if extra then
    for _, v in ipairs(extra) do args[#args + 1] = v end
  end
  redis.call(unpack(args))
end

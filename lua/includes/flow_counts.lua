-- flow_counts: the counts of running laned tasks that limits read (K.flow_running, per job
-- and per job\tgroup), kept for the call. A claim reads those of all its candidates in
-- one HMGET and writes what it counted in one HSET at its end (counts_write), instead of
-- an HINCRBY per task; an end writes its own at once (it runs before any claim in a call).

local COUNTS = {}  -- name -> count, as read or counted in this call
local DIRTY = {}   -- names counted in this call and not written yet

-- Read the counts of `names` not known yet, in one call.
local function counts_read(names)
  local want, seen = {}, {}
  for _, name in ipairs(names) do
    if COUNTS[name] == nil and not seen[name] then
      want[#want + 1] = name
      seen[name] = true
    end
  end
  if #want == 0 then return end
  local got = redis.call('HMGET', K.flow_running(), unpack(want))
  for i, name in ipairs(want) do COUNTS[name] = tonumber(got[i]) or 0 end
end

local function count_of(name)
  counts_read({name})
  return COUNTS[name]
end

-- Count one more running under `name`; written by counts_write.
local function count_up(name)
  COUNTS[name] = count_of(name) + 1
  DIRTY[name] = true
end

-- Write what was counted in this call (a count at 0 stays, as one small field).
local function counts_write()
  local args = {}
  for name in pairs(DIRTY) do
    args[#args + 1] = name
    args[#args + 1] = COUNTS[name]
  end
  if #args > 0 then redis.call('HSET', K.flow_running(), unpack(args)) end
  DIRTY = {}
end

-- One fewer running under `name` (an end): written at once.
local function count_down(name)
  if next(DIRTY) then counts_write() end
  local n = redis.call('HINCRBY', K.flow_running(), name, -1)
  if n < 0 then  -- never counted (a limit that came while it ran is recounted): none
    redis.call('HDEL', K.flow_running(), name)
    n = 0
  end
  if COUNTS[name] ~= nil then COUNTS[name] = n end
end

-- The counts were rewritten in Redis (recount): forget them.
local function counts_forget()
  counts_write()
  COUNTS = {}
end

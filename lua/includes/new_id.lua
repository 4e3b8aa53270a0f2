-- new_id(now): a ULID-shaped id, 10 chars of Redis time (ms), 2 of the partition index (PART,
-- from the prelude), 14 of the partition's counter. Partition 0 gives today's ids.

local B32 = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
local function b32(n, width)
  local out = {}
  for i = width, 1, -1 do
    local d = n % 32
    out[i] = string.sub(B32, d + 1, d + 1)
    n = math.floor(n / 32)
  end
  return table.concat(out)
end

local function new_id(now)
  return b32(now, 10) .. b32(PART, 2) .. b32(redis.call('INCR', K.seq()), 14)
end

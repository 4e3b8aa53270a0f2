-- tag_index(id, tags, now, add): add task `id` to the index of each of its tags (or, `add`
-- false, remove it). `tags` is the task hash's field: "key=value" lines, sorted.

local function tag_index(id, tags, now, add)
  if not tags or tags == '' then return end
  for tag in string.gmatch(tags, '[^\n]+') do
    if add then
      redis.call('ZADD', K.tagged(tag), now, id)
    else
      redis.call('ZREM', K.tagged(tag), id)  -- an emptied index goes with its last member
    end
  end
end

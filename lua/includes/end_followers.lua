-- end_followers(sid): end the series that follow series `sid` (it has no more runs to
-- follow), and theirs.
-- include: emit

local function end_followers(sid)
  local stack = {sid}
  while #stack > 0 do
    local parent = table.remove(stack)
    for _, fsid in ipairs(redis.call('SMEMBERS', K.followers(parent))) do
      if redis.call('HGET', K.series(fsid), 'status') == 'active' then
        redis.call('HSET', K.series(fsid), 'status', 'ended')
        emit('series_ended', fsid, {'follows', parent})
        stack[#stack + 1] = fsid
      end
    end
  end
end

-- follow_run(sid, parent, now): give each active follower of series `sid` a run waiting on
-- the parent's run `parent`, and each follower of those a run waiting on that one, all the
-- way down.
-- include: new_id, create_task, index_task, emit

local function follow_run(sid, parent, now)
  local stack = {{sid, parent}}
  while #stack > 0 do
    local top = table.remove(stack)
    local psid, prun = top[1], top[2]
    for _, fsid in ipairs(redis.call('SMEMBERS', K.followers(psid))) do
      local fk = K.series(fsid)
      local f = redis.call('HMGET', fk, 'status', 'job', 'args', 'slots', 'max_ms',
        'last_completed_at', 'key', 'retries', 'backoff_ms', 'group', 'priority', 'tags')
      if f[1] == 'active' then
        local fid = new_id(now)
        create_task(fid, f[2], f[3], f[4], f[5], -1, now,
          {'series', fsid, 'start_after', prun, 'last_completed_at', f[6] or '',
           'key', f[7] or '', 'retries', f[8] or 0, 'backoff_ms', f[9] or 1000,
           'group', f[10] or '', 'priority', f[11] or 0, 'tags', f[12] or ''})
        index_task(fid, -1, prun, now)
        redis.call('HSET', fk, 'current', fid)
        emit('scheduled', fid, {'series', fsid, 'after', prun})
        stack[#stack + 1] = {fsid, fid}
      end
    end
  end
end

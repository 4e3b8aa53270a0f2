-- retry_one(id, now): a new pending task, due now, with the job, args, slots, max duration,
-- retries, group, priority and tags of ended task `id`; linked both ways (`retry_of` on the
-- new one, `retried_by` on the old, which otherwise stays as it ended: a repeated retry
-- sees it). A one-off task, whatever `id` was. Returns the new id; the caller checked that
-- `id` ended and was not retried.
-- include: new_id, create_task, index_task, emit

local function retry_one(id, now)
  local f = redis.call('HMGET', K.task(id), 'job', 'args', 'slots', 'max_ms', 'retries',
    'backoff_ms', 'group', 'priority', 'tags')
  local nid = new_id(now)
  local lane = create_task(nid, f[1], f[2], f[3], f[4], now, now, {'retries', f[5] or 0,
    'backoff_ms', f[6] or 1000, 'group', f[7] or '', 'priority', f[8] or 0, 'tags', f[9] or '',
    'retry_of', id})
  index_task(nid, now, '', now, lane, '')
  redis.call('HSET', K.task(id), 'retried_by', nid)
  emit('scheduled', nid, {'job', f[1], 'retry_of', id})
  return nid
end

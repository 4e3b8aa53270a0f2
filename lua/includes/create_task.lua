-- create_task(id, job, args, slots, max_ms, start, now, fields): one pending task hash;
-- `fields` is a flat list of extra hash fields. Returns the task's lane ('' for none: see
-- flow), for index_task. A `tags` field ("k=v" lines) also indexes the task under each tag.
-- include: flow, tag_index

-- Fields left out of a task hash when they hold their default (readers assume it):
-- memory per pending task is what bounds a backlog of millions.
local DEFAULTS = {key = '', start_after = '', retries = '0', backoff_ms = '1000',
  last_completed_at = '', skipped_runs = '0', series = '', fp = '', group = '', priority = '0',
  tags = '', retry_of = '', triggered = ''}

local function create_task(id, job, args, slots, max_ms, start, now, fields)
  local h = {'HSET', K.task(id), 'job', job, 'args', args, 'status', 'pending',
    'slots', slots, 'max_ms', max_ms, 'created_at', now, 'start_at', start}
  local group, prio = '', 0
  for i = 1, #fields, 2 do
    local name, value = fields[i], fields[i + 1]
    if name == 'group' then group = value or '' end
    if name == 'priority' then prio = tonumber(value) or 0 end
    if name == 'tags' then tag_index(id, value, now, true) end
    if value and tostring(value) ~= DEFAULTS[name] then
      h[#h + 1] = name
      h[#h + 1] = value
    end
  end
  local lane = lane_of(job, group, prio)
  if lane ~= '' then
    h[#h + 1] = 'lane'
    h[#h + 1] = lane
  end
  redis.call(unpack(h))
  return lane
end

-- create_task(id, job, args, slots, max_ms, start, now, fields): one pending task hash;
-- `fields` is a flat list of extra hash fields.

-- Fields left out of a task hash when they hold their default (readers assume it):
-- memory per pending task is what bounds a backlog of millions.
local DEFAULTS = {key = '', start_after = '', retries = '0', backoff_ms = '1000',
  last_completed_at = '', skipped_runs = '0', series = '', fp = ''}

local function create_task(id, job, args, slots, max_ms, start, now, fields)
  local h = {'HSET', K.task(id), 'job', job, 'args', args, 'status', 'pending',
    'slots', slots, 'max_ms', max_ms, 'created_at', now, 'start_at', start}
  for i = 1, #fields, 2 do
    local name, value = fields[i], fields[i + 1]
    if value and tostring(value) ~= DEFAULTS[name] then
      h[#h + 1] = name
      h[#h + 1] = value
    end
  end
  redis.call(unpack(h))
end

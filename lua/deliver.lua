-- deliver: apply deliveries from another partition's outbox to this one (idempotent: a
-- delivery applied twice changes nothing the second time).
-- KEYS[1]  tagged key prefix of the target partition
-- ARGV[1]  n, then n groups of 4: kind (settle|follow), a, b, c
--          settle: child task id, parent task id, the parent's end status
--          follow: parent task id, child task id, the child's partition index
-- Returns  {0, n applied, deliveries this call put in this partition's outbox}
-- Events   released, cancelled (a settled child)
-- include: now, outbox_put, remote_settle

local now = now_ms()
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local b = 2 + i * 4
  local kind = ARGV[b]
  if kind == 'settle' then
    remote_settle(ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], now)
  elseif kind == 'follow' then
    remote_follow(ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], now)
  end
end
return {OK, n, OUTBOX_MADE}

-- finish: record how tasks ended, continue their series, release their dependents,
-- then claim what now fits (finish and claim in one round trip).
-- KEYS[1]  tagged key prefix
-- ARGV[1]  instance id
-- ARGV[2]  most tasks to claim afterwards (0: claim nothing)
-- ARGV[3]  free slots over all partitions after these outcomes (-1: the hash decides; see
--          claim_due)
-- ARGV[4]  n, the number of outcomes that follow, 8 fields each:
--          task id, fencing token (attempt), status (completed|failed|cancelled),
--          exit code, reason, next start of its series (ms, or "" for none), skipped runs,
--          the job's result as JSON text ("" for none: stored only on a completed task)
-- Returns  {0, {per-outcome code: 0 recorded, -6 stale}, claim reply (see claim.lua) or {-1},
--          deliveries this call put in the outbox (dependents in other partitions)}
-- Events   completed|failed|cancelled, retry (a failed attempt of a job with retries goes
--          back to the due set after its backoff), stale_finish (a late report: no change)
-- include: now, emit, retry_task, close_task, continue_series, settle_dependents,
-- include: trim_finished, lease_ok, claim_due, outbox_put

local inst = ARGV[1]
local claim_max = tonumber(ARGV[2])
local cap = tonumber(ARGV[3]) or -1
local n = tonumber(ARGV[4])
local now = now_ms()
local codes = {}
for i = 0, n - 1 do
  local b = 5 + i * 8
  local id, token, status = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local code, reason = ARGV[b + 3], ARGV[b + 4]
  local f = redis.call('HMGET', K.task(id), 'status', 'attempt', 'instance')
  if f[1] == 'running' and f[2] == token and f[3] == inst and status == 'failed'
      and retry_task(id, reason, code, now) then
    codes[#codes + 1] = OK
  elseif f[1] == 'running' and f[2] == token and f[3] == inst then
    close_task(id, status, reason, code, now)
    if status == 'completed' and (ARGV[b + 7] or '') ~= '' then
      redis.call('HSET', K.task(id), 'result', ARGV[b + 7])  -- before its dependents read it
    end
    local start = nil
    if ARGV[b + 5] ~= '' then start = tonumber(ARGV[b + 5]) end
    continue_series(id, status, start, tonumber(ARGV[b + 6]) or 0, now)
    settle_dependents(id, status, now)
    codes[#codes + 1] = OK
  else
    emit('stale_finish', id, {'instance', inst, 'token', token, 'status', status})
    codes[#codes + 1] = E_STALE
  end
end
trim_finished(now)
local claimed = {E_LEASE_LOST}
if lease_ok(inst, now) then
  claimed = claim_due(inst, claim_max, now, cap)
end
return {OK, codes, claimed, OUTBOX_MADE}

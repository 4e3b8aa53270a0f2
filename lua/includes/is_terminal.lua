-- is_terminal(status): the task ended (completed, failed or cancelled).

local function is_terminal(status)
  return status == 'completed' or status == 'failed' or status == 'cancelled'
end

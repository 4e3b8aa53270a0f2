-- read_given(first): next starts the caller computed for series runs: ARGV[first] = n, then
-- n triples (task id, next start in ms or "", skipped runs). Returns id -> {start text,
-- skipped}.

local function read_given(first)
  local given = {}
  local n = tonumber(ARGV[first]) or 0
  for i = 0, n - 1 do
    local b = first + 1 + 3 * i
    given[ARGV[b]] = {ARGV[b + 1], tonumber(ARGV[b + 2]) or 0}
  end
  return given
end

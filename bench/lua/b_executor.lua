-- The executor (issue 20): the round trip of one tiny task
-- (submit(f):result(), each timed), and the cost per task of a batch of
-- tiny tasks submitted at once, on thread workers and on interp workers.
-- No targets: the issue asks for the figures.
local tether = require "tether"
local B = require "benchlib"

local n = B.count(2000)
local batch = math.max(100, n * 5)

for _, interp in ipairs({false, true}) do
  local kind = interp and "interp" or "thread"
  local ex <close> = tether.executor{workers = 4, interp = interp}
  local f = function(x) return x end
  for _ = 1, 50 do ex:submit(f, 1):result() end -- warm up
  local us = {}
  for i = 1, n do
    local t0 = tether.clock()
    ex:submit(f, i):result()
    us[i] = (tether.clock() - t0) * 1e6
  end
  B.report("lua.executor." .. kind .. ".roundtrip", "us", us)
  local per = {}
  for r = 1, 3 do
    local t0 = tether.clock()
    local fs = {}
    for i = 1, batch do fs[i] = ex:submit(f, i) end
    for i = 1, batch do fs[i]:result() end
    per[r] = (tether.clock() - t0) * 1e6 / batch
  end
  B.report("lua.executor." .. kind .. ".per_task", "us", per, nil, {tasks = batch})
end

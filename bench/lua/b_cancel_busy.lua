-- Cancel a thread spinning in a pure-Lua loop, then join it: the time from
-- t:cancel() until join returns.  Target: median <= 50 us (FIGURES.md:
-- Lanes 35 us with a count hook left installed, effil 145 us).
local tether = require "tether"
local B = require "benchlib"

local n = B.count(300)
local us = {}
for i = 1, n do
  local ready = tether.event()
  local t = tether.thread(function() ready:set() local x = 0 while true do x = x + 1 end end)
  ready:wait()
  tether.sleep(0.001) -- the spinner runs; the main thread comes back for the GIL
  local t0 = tether.clock()
  t:cancel()
  t:join()
  us[i] = (tether.clock() - t0) * 1e6
  assert(t:status() == "cancelled")
end
B.report("lua.cancel_busy", "us", us, 50)

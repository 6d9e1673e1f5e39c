-- Cancel a thread spinning in a pure-Lua loop, then join it: the time from
-- t:cancel() until join returns.  Target: median <= 50 us (reference
-- figures: Lanes 35 us with a count hook left installed, effil 145 us).
--
-- The floor, measured in the same run and interleaved with it: the same
-- spinner stopped by a shared flag instead (main sets it, the spinner sees
-- it at its next iteration once it has the GIL, returns, and join returns).
-- It costs the same GIL hand-over, thread exit and join, without the
-- cancel; the ratio is what machines of different speed can compare.
local tether = require "tether"
local B = require "benchlib"

local n = B.count(300)
local us, floor = {}, {}

local function cancel_once()
  local ready = tether.event()
  local t = tether.thread(function() ready:set() local x = 0 while true do x = x + 1 end end)
  ready:wait()
  tether.sleep(0.001) -- the spinner runs; the main thread comes back for the GIL
  local t0 = tether.clock()
  t:cancel()
  t:join()
  local dt = (tether.clock() - t0) * 1e6
  assert(t:status() == "cancelled")
  return dt
end

local function stop_once()
  local ready, stop = tether.event(), false
  local t = tether.thread(function() ready:set() local x = 0 while not stop do x = x + 1 end end)
  ready:wait()
  tether.sleep(0.001)
  local t0 = tether.clock()
  stop = true
  t:join()
  local dt = (tether.clock() - t0) * 1e6
  assert(t:status() == "done")
  return dt
end

for i = 1, n do
  if i % 2 == 1 then
    us[#us + 1] = cancel_once()
    floor[#floor + 1] = stop_once()
  else
    floor[#floor + 1] = stop_once()
    us[#us + 1] = cancel_once()
  end
end
local f = B.stats(floor)
B.report("lua.cancel_busy", "us", us, 50,
         {floor = f.median, ratio = B.stats(us).median / f.median})
B.report("lua.stop_busy_floor", "us", floor, nil)

-- Cancel a thread blocked in a queue receive, then join it: the time from
-- t:cancel() until join returns.  FIGURES.md: Lanes 101 us, effil 151 us;
-- CPython never delivers until the wait ends.
local tether = require "tether"
local B = require "benchlib"

local n = B.count(300)
local us = {}
local q = tether.queue()
for i = 1, n do
  local ready = tether.event()
  local t = tether.thread(function() ready:set() q:get() end)
  ready:wait()
  tether.sleep(0.001) -- lets it block in get
  local t0 = tether.clock()
  t:cancel()
  t:join()
  us[i] = (tether.clock() - t0) * 1e6
  assert(t:status() == "cancelled")
end
B.report("lua.cancel_blocked", "us", us, nil)

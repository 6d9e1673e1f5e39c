-- Spawn + join of a trivial thread: tether.thread(f):join(), each timed.
-- Target: median <= 60 us (FIGURES.md: pthread_create + join with a
-- started-handshake is 49.5 us; Lanes 167 us, llthreads2 78 us).
local tether = require "tether"
local B = require "benchlib"

local n = B.count(2000)
local f = function() end
for _ = 1, 50 do tether.thread(f):join() end -- warm up
local us = {}
for i = 1, n do
  local t0 = tether.clock()
  tether.thread(f):join()
  us[i] = (tether.clock() - t0) * 1e6
end
B.report("lua.spawn_join", "us", us, 60)

-- Ping-pong through two tether.queues: one round trip is a put and a get
-- on each side, two hand-overs of the GIL.  Target: median <= 25 us
-- (FIGURES.md: Lanes 30.7 us, effil 26.8 us; a raw futex hand-off is
-- 10.2 us one way).
local tether = require "tether"
local B = require "benchlib"

local n = B.count(5000)
local ping, pong = tether.queue(), tether.queue()
local echo = tether.thread(function()
  while true do
    local v = ping:get()
    if v == nil then return end
    pong:put(v)
  end
end)
for i = 1, 100 do ping:put(i) pong:get() end -- warm up
local us = {}
for i = 1, n do
  local t0 = tether.clock()
  ping:put(i)
  local v = pong:get()
  us[i] = (tether.clock() - t0) * 1e6
  assert(v == i)
end
ping:put(nil)
echo:join()
B.report("lua.pingpong", "us", us, 25)

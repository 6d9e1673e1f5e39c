-- The cost of having tether around: the same loops in plain lua5.4 and with
-- `require "tether"` loaded and one idle thread alive (blocked in a wait).
-- Run as `b_overhead.lua <mode> <rounds>` with mode "plain" or "tether"; it
-- prints one result line per loop with the seconds of each round.  run.lua
-- runs both modes in alternation and reports the ratio of the medians
-- (target: at most 1.03).
local B = require "benchlib"

local mode, rounds = arg[1] or "plain", tonumber(arg[2]) or 7
local idle
if mode == "tether" then
  local tether = require "tether"
  local never = tether.event()
  idle = tether.thread({daemon = true}, function() never:wait() end)
end

local clock = os.clock -- CPU time of this process: the idle thread uses none

-- A tight numeric loop (what a count hook left installed would halve).
local function arith()
  local s = 0
  for i = 1, 3e7 do s = s + i % 7 end
  return s
end

-- Calls, closures, tables and strings: the allocator and the collector.
local function mixed()
  local acc, parts = 0, {}
  for i = 1, 1e6 do
    local t = {i, i * 2, name = "k" .. (i % 100)}
    acc = acc + #t + t[2] // 3
    parts[i % 50 + 1] = t.name
  end
  return acc + #table.concat(parts)
end

-- Coroutine switches, which go through the module's coroutine.resume.
local function coros()
  local co = coroutine.wrap(function() local n = 0 while true do n = n + coroutine.yield(n) end end)
  co(0)
  local s = 0
  for i = 1, 1e6 do s = s + co(1) end
  return s
end

for _, loop in ipairs({{"arith", arith}, {"mixed", mixed}, {"coros", coros}}) do
  local secs = {}
  loop[2]() -- warm up
  for r = 1, rounds do
    local t0 = clock()
    loop[2]()
    secs[r] = clock() - t0
  end
  B.report("lua.overhead." .. loop[1], "s", secs, nil, {mode = mode})
end

-- Isolated interpreters (issue 6):
--
--   lua.interp.speedup   8 workers x ITER iterations of `x = x + i`, one
--                        interpreter each, against the same work done in
--                        one plain lua5.4 process: plain time / interp time.
--                        Target >= 1.85 on 2 cores (FIGURES.md: llthreads2
--                        1.89x, Lanes 1.8x, luaproc 1.93x).
--   lua.interp.pingpong  one round trip through two channels between the
--                        main interpreter and a thread of another one.
--                        Target <= 25 us.
--   lua.interp.spawn     tether.interp() + i:thread(f):join() + i:close().
--
--   lua5.4 b_interp.lua [N [ITER [ROUNDS]]]   (defaults 5000, 1e7, 3)
local tether = require "tether"
local B = require "benchlib"

local n = B.count(5000)
local iter = math.tointeger(tonumber(arg[2]) or 1e7)
local rounds = math.tointeger(tonumber(arg[3]) or 3)
local WORKERS = 8

local function work(count)
  local x = 0
  for i = 1, count do x = x + i end
  return x
end

-- Runs shell command `cmd` and returns its wall time.
local function timed(cmd)
  local t0 = tether.clock()
  local p = assert(io.popen(cmd, "r"))
  p:read("a")
  assert(p:close(), cmd .. " failed")
  return tether.clock() - t0
end

-- Plain lua5.4 (no tether) doing `workers` loops of `iter` iterations.
local function plain_cmd(workers)
  local lua = os.getenv("TETHER_LUA") or "lua5.4"
  return string.format("%s -e 'local x for _ = 1, %d do x = 0 for i = 1, %d do x = x + i end end'",
                       lua, workers, iter)
end

-- The same work in one plain lua5.4.
local function plain_seconds()
  return timed(plain_cmd(WORKERS))
end

-- The machine's ceiling: the same work in two plain lua5.4 processes at
-- once.  On a loaded machine this is well under 2x, and no library can do
-- better.
local function two_process_seconds()
  local half = plain_cmd(WORKERS // 2)
  return timed(string.format('sh -c "%s & %s; wait"', half, half))
end

-- The work spread over WORKERS interpreters, one thread each; interpreter
-- creation is outside the timing, thread start and join inside.
local function interp_seconds()
  local is, ts = {}, {}
  for k = 1, WORKERS do is[k] = tether.interp() end
  local t0, c0 = tether.clock(), os.clock()
  for k = 1, WORKERS do ts[k] = is[k]:thread(work, iter) end
  for k = 1, WORKERS do assert(ts[k]:join()) end
  local s, cpu = tether.clock() - t0, os.clock() - c0
  for k = 1, WORKERS do assert(is[k]:close()) end
  return s, cpu
end

-- cores_used (process CPU time / wall time of the interpreter run) and
-- ceiling (plain time / two plain processes' time) show how much of a
-- second core the machine gave: on a loaded machine the speedup cannot
-- reach its target, whatever the library does; `of_ceiling` is the
-- speedup as a fraction of that ceiling.
local plain, par, ratios, cores, ceilings = {}, {}, {}, {}, {}
for r = 1, rounds do -- alternated, so that load from others hits all
  plain[r] = plain_seconds()
  local cpu
  par[r], cpu = interp_seconds()
  ceilings[r] = plain[r] / two_process_seconds()
  ratios[r] = plain[r] / par[r]
  cores[r] = cpu / par[r]
end
local pst, ist = B.stats(plain), B.stats(par)
local cst, ceil = B.stats(cores), B.stats(ceilings)
local st = B.report("lua.interp.speedup", "x", ratios, 1.85,
                    {better = "higher", plain = pst.median, interp = ist.median,
                     cores_used = cst.median, ceiling = ceil.median,
                     workers = WORKERS, iterations = iter})
B.report("lua.interp.of_ceiling", "x", {st.median / ceil.median}, nil,
         {better = "higher"})

-- Ping-pong.
do
  local i = tether.interp()
  local ping, pong = tether.channel(), tether.channel()
  local echo = i:thread(function(ping, pong)
    while true do
      local v = ping:recv()
      if v == nil then return end
      pong:send(v)
    end
  end, ping, pong)
  for k = 1, 100 do ping:send(k) pong:recv() end -- warm up
  local us = {}
  for k = 1, n do
    local t0 = tether.clock()
    ping:send(k)
    pong:recv()
    us[k] = (tether.clock() - t0) * 1e6
  end
  ping:send(nil)
  assert(echo:join())
  assert(i:close())
  B.report("lua.interp.pingpong", "us", us, 25)
end

-- Spawn.
do
  local f = function() return 1 end
  local m = math.max(1, n // 25)
  for _ = 1, 5 do local i = tether.interp() i:thread(f):join() i:close() end
  local us = {}
  for k = 1, m do
    local t0 = tether.clock()
    local i = tether.interp()
    assert(i:thread(f):join())
    assert(i:close())
    us[k] = (tether.clock() - t0) * 1e6
  end
  B.report("lua.interp.spawn", "us", us, nil)
end

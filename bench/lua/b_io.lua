-- I/O in threads (issue 18): blocking io/os calls overlap, cancel reaches
-- a blocked read.  Wall times on the monotonic clock, over ROUNDS rounds:
--
--   lua.io.execute8        8 threads x os.execute("sleep 0.2"), start to
--                          last join.  Target <= 0.25 s (serial: 1.6 s).
--   lua.io.popen8          8 threads, each reading an io.popen'ed command
--                          that writes a line every 10 ms for 1 s (one
--                          lua5.4 process each, on an absolute schedule).
--                          Target <= 1.1 s (serial: 8 s).
--   lua.io.interp_execute4 4 interpreters, each running os.execute("sleep
--                          0.2") in an i:thread, start to last join.
--                          Target <= 0.25 s.
--   lua.io.cancel_read     t:cancel() of a thread blocked in io.read on a
--                          pipe, until join returns.  Target <= 10 ms
--                          median; its floor, interleaved, is the same
--                          thread woken by a line written to the pipe.
--
--   lua5.4 b_io.lua [ROUNDS [CANCELS [SCALE]]]   (defaults 5, 200, 1)
-- SCALE < 1 shortens the sleeps and the popen schedule (smoke runs).
local tether = require "tether"
local B = require "benchlib"

local rounds = math.tointeger(tonumber(arg[1]) or 5)
local cancels = math.tointeger(tonumber(arg[2]) or 200)
local scale = tonumber(arg[3]) or 1

local function wall(fn)
  local t0 = tether.clock()
  fn()
  return tether.clock() - t0
end

local function threads(n, body, ...)
  local ts = {}
  for k = 1, n do ts[k] = tether.thread(body, k, ...) end
  for k = 1, n do assert(ts[k]:join()) end
end

local sleep_cmd = string.format("sleep %g", 0.2 * scale)
local samples = {}
for r = 1, rounds do
  samples[r] = wall(function()
    threads(8, function() assert(os.execute(sleep_cmd)) end)
  end)
end
B.report("lua.io.execute8", "s", samples, 0.25 * scale, {serial = 1.6 * scale})

local lines = math.max(1, math.floor(100 * scale))
-- The writer: this same interpreter with the module (started in a few
-- milliseconds, where python3 can take seconds on a loaded machine).
local lua = arg[-1] or "lua5.4"
local writer = string.format("%s -e 'local t = require [[tether]] local t0 = t.clock() " ..
  "for i = 1, %d do io.write(i, string.char(10)) io.flush() " ..
  "local d = t0 + i * 0.01 - t.clock() if d > 0 then t.sleep(d) end end'", lua, lines)
samples = {}
for r = 1, rounds do
  samples[r] = wall(function()
    threads(8, function()
      local p = assert(io.popen(writer))
      local n = 0
      for _ in p:lines() do n = n + 1 end
      assert(p:close())
      assert(n == lines)
    end)
  end)
end
B.report("lua.io.popen8", "s", samples, 1.1 * scale, {serial = 8 * scale})

samples = {}
for r = 1, rounds do
  local is = {}
  for k = 1, 4 do is[k] = tether.interp() end
  samples[r] = wall(function()
    local ts = {}
    for k = 1, 4 do
      ts[k] = is[k]:thread(function(cmd) return os.execute(cmd) end, sleep_cmd)
    end
    for k = 1, 4 do assert(ts[k]:join()) end
  end)
  for k = 1, 4 do assert(is[k]:close()) end
end
B.report("lua.io.interp_execute4", "s", samples, 0.25 * scale)

-- A pipe the benchmark writes itself: a FIFO opened at both ends.
local path = os.tmpname()
os.remove(path)
assert(os.execute("mkfifo " .. path))
local rd = assert(io.open(path, "r+"))
local wr = assert(io.open(path, "w"))
wr:setvbuf("no")

local function blocked_once(cancel)
  local ready = tether.event()
  local t = tether.thread(function() ready:set() return rd:read("l") end)
  ready:wait()
  tether.sleep(0.002) -- lets it block in read
  local t0 = tether.clock()
  if cancel then t:cancel() else wr:write("line\n") end
  t:join()
  local dt = (tether.clock() - t0) * 1e3
  assert(t:status() == (cancel and "cancelled" or "done"))
  return dt
end

local ms, floor = {}, {}
for i = 1, cancels do
  if i % 2 == 1 then
    ms[#ms + 1] = blocked_once(true)
    floor[#floor + 1] = blocked_once(false)
  else
    floor[#floor + 1] = blocked_once(false)
    ms[#ms + 1] = blocked_once(true)
  end
end
rd:close()
wr:close()
os.remove(path)
local f = B.stats(floor)
B.report("lua.io.cancel_read", "ms", ms, 10, {floor = f.median, ratio = B.stats(ms).median / f.median})

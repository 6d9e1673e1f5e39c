-- Single-thread I/O with the module's io library against Lua's own
-- (issue 18 §1: at most 1.05x).  Run as `b_io_single.lua <mode> <rounds>
-- <file> <mb>` with mode "plain" or "tether"; run.lua alternates the two
-- modes and reports the ratio of the medians.  The loops:
--
--   lua.io.lines    for l in io.lines(file) over an MB-megabyte file of
--                   short lines
--   lua.io.read_a   f:read("a") of it
--   lua.io.write    io.write of 10^6 short lines (to a file)
--
-- The file is made by the first run (lines of 20 to 80 bytes).
local B = require "benchlib"

local mode, rounds = arg[1] or "plain", tonumber(arg[2]) or 5
local path, mb = arg[3], tonumber(arg[4]) or 100
if mode == "tether" then require "tether" end

local function ensure_file()
  local f = io.open(path, "r")
  if f then
    local size = f:seek("end")
    f:close()
    if size >= mb * 1e6 then return end
  end
  f = assert(io.open(path, "w"))
  local chunk = {}
  for i = 1, 1000 do chunk[i] = string.rep(string.char(97 + i % 26), 20 + i % 61) end
  chunk = table.concat(chunk, "\n") .. "\n"
  for _ = 1, math.ceil(mb * 1e6 / #chunk) do f:write(chunk) end
  f:close()
end
ensure_file()

local clock = os.clock

local function lines()
  local n = 0
  for l in io.lines(path) do n = n + #l end
  return n
end

local function read_a()
  local f = assert(io.open(path, "r"))
  local s = f:read("a")
  f:close()
  return #s
end

local out = path .. ".out"
local writes = math.max(1000, math.floor(1e6 * mb / 100))
local function write()
  local f = assert(io.open(out, "w"))
  io.output(f)
  for i = 1, writes do io.write("line ", i, "\n") end
  io.close(f)
  io.output(io.stdout)
  return writes
end

for _, loop in ipairs({{"lines", lines}, {"read_a", read_a}, {"write", write}}) do
  local secs = {}
  loop[2]() -- warm up (and the page cache)
  for r = 1, rounds do
    local t0 = clock()
    loop[2]()
    secs[r] = clock() - t0
  end
  B.report("lua.io." .. loop[1], "s", secs, nil, {mode = mode})
end
os.remove(out)

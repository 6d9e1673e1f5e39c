-- Differential test of lt_io.c: each script below runs in a fresh lua5.4
-- twice, without the module and with it, and the two outputs must be the
-- same byte for byte (addresses and temporary names aside).  A script
-- sees WITH (whether to load the module) and a scratch directory DIR; it
-- opens a file before the module loads (PRE), so that handles of Lua's
-- own io library are covered too.
local T = require "testlib"

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir " .. dir))

local prologue = [[
local DIR = %q
local WITH = %s
local PRE = assert(io.open(DIR .. "/pre.txt", "w+"))
PRE:write("pre 1\npre 2\n") PRE:seek("set")
if WITH then require "tether" end
local function show(...)
  local out = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "string" then out[#out + 1] = string.format("%%q", v)
    elseif type(v) == "number" then out[#out + 1] = math.type(v) .. ":" .. tostring(v)
    else out[#out + 1] = tostring(v) end
  end
  print(select("#", ...) .. ": " .. table.concat(out, ", "))
end
local function try(...) show(pcall(...)) end
local function write_file(name, s)
  local f = assert(io.open(DIR .. "/" .. name, "wb")) f:write(s) f:close()
  return DIR .. "/" .. name
end
]]

local scripts = {}

scripts.read_formats = [[
local p = write_file("a.txt", "line one\nline two\r\n\n  42  -3.5e2 0x1p4 0x 12abc\n" ..
  "  +.5 - 1e 9999999999999999999999 nan\nlast line without newline")
local f = io.open(p)
show(f:read())
show(f:read("l", "L", "l"))
show(f:read("n", "n", "n"))
show(f:read("n"))
show(f:read("l"))
show(f:read("*n", "*n", "*l"))
show(f:read("n", "l"))
show(f:read(0))
show(f:read(5, 0, 3))
show(f:read("a"))
show(f:read("a"), f:read("l"), f:read(0), f:read(1), f:read("n"))
try(f.read, f, "x")
try(f.read, f, {})
try(f.read, f, 1.5)
show(f:seek("set", 0), f:read(4), f:seek(), f:seek("cur", 2), f:read("l"))
show(f:seek("end"), f:read(1))
try(f.seek, f, "middle")
try(f.seek, f, "set", 1.5)
show(f:seek("set", -1))
show(f:close())
show(pcall(f.close, f))
show(io.type(f), tostring(f))
try(f.read, f)
try(f.lines, f)
try(f.write, f, "x")
try(f.seek, f)
try(f.setvbuf, f, "no")
try(f.flush, f)
-- A numeral longer than 200 characters.
f = io.open(write_file("long.txt", string.rep("1", 250) .. " 7"))
show(f:read("n"))
show(f:read("n"))
f:close()
]]

scripts.lines = [[
local p = write_file("b.txt", "1 2 3\nx\n4.5 y\n\nend")
for l in io.lines(p) do show(l) end
for a, b in io.lines(p, "n", "l") do show(a, b) end
for a in io.lines(p, 3) do show(a) end
for l in io.lines(p, "L") do show(l) end
show(select("#", io.lines(p)))
try(io.lines, DIR .. "/missing")
try(io.lines, p, "x")
local it = io.lines(p, "x")
try(it)
local f = io.open(p)
local it2 = f:lines("l")
show(it2(), it2())
f:close()
try(it2)
try(io.lines, p, table.unpack((function() local t = {} for i = 1, 251 do t[i] = "l" end return t end)()))
do
  local n = 0
  for l in io.lines(p) do n = n + 1 if n == 2 then break end end
  show(n)
end
io.input(p)
for l in io.lines() do show(l) end
show(io.read("n", "n"))
io.input():close()
try(io.read)
try(io.lines)
io.input(io.stdin)
show(io.type(io.input()))
try(io.input, DIR .. "/missing")
try(io.input, {})
]]

scripts.write = [[
local p = DIR .. "/w.txt"
local f = assert(io.open(p, "w"))
show(f:write("a", 1, 2.5, -0.0, 1e100, 2^63, math.mininteger, 0.1, "\0z") == f)
try(f.write, f, "ok", {}, "never")
try(f.write, f, nil)
show(f:setvbuf("full", 16), f:setvbuf("line"), f:setvbuf("no"))
try(f.setvbuf, f, "sometimes")
show(f:flush())
show(f:close())
local g = io.open(p, "rb") show(g:read("a")) g:close()
io.output(p)
show(io.write("x", 3, "\n") == io.output())
show(io.flush())
show(io.close())
try(io.write, "y")
try(io.flush)
io.output(io.stdout)
show(io.write() == io.stdout)
local a = assert(io.open(p, "a")) a:write("appended") a:close()
g = io.open(p) show(g:read("a")) g:close()
local r = io.open(p, "r")
show(r:write("no"))
r:close()
]]

scripts.open_modes = [[
for _, m in ipairs({"r", "w", "a", "r+", "w+", "a+", "rb", "r+b", "wbb", "x", "", "rw", "r+x", "b"}) do
  local ok, f, msg, code = pcall(io.open, DIR .. "/m.txt", m)
  show(m, ok, io.type(f), msg, code)
  if ok and f then f:close() end
end
show(io.open(DIR .. "/missing/x"))
show(io.open(DIR))
local d = io.open(DIR)
if d then show(d:read(1)) show(d:read("a")) d:close() end
try(io.open)
try(io.open, DIR .. "/m.txt", 5)
local t = io.tmpfile()
show(io.type(t), t:write("tmp"), t:seek("set"), t:read("a"))
show(t:close())
]]

scripts.popen_execute = [[
local p = io.popen("printf 'one\\ntwo\\n'; exit 4")
show(p:read("l"), p:read("L"), p:read("a"), p:read("l"))
show(p:close())
p = io.popen("cat > " .. DIR .. "/pw.txt", "w")
show(p:write("via popen\n") == p)
show(p:close())
show(io.open(DIR .. "/pw.txt"):read("a"))
try(io.popen, "true", "rw")
p = io.popen("printf abc")
try(p.read, p, -1)
try(p.read, p, math.mininteger)
show(p:read(2), p:read("a"))
p:close()
try(io.popen, "true", "r+")
p = io.popen("kill -TERM $$")
show(p:read("a"), p:close())
show(os.execute("exit 0"))
show(os.execute("exit 7"))
show(os.execute("kill -KILL $$"))
show(os.execute("echo to stdout"))
show(os.execute())
try(os.execute, {})
show(os.remove(DIR .. "/pw.txt"))
show(os.remove(DIR .. "/pw.txt"))
show(os.remove(DIR))
local x = write_file("r1.txt", "r")
show(os.rename(x, DIR .. "/r2.txt"))
show(os.rename(x, DIR .. "/r2.txt"))
try(os.rename, x)
local n = os.tmpname()
show(n:match("^/tmp/lua_......$") ~= nil, io.open(n) ~= nil)
os.remove(n)
]]

scripts.std_and_pre = [[
show(PRE:read("l"), PRE:read("a"))
show(PRE:write("more") == PRE, PRE:seek("set"), PRE:read("a"))
for l in PRE:lines() do show(l) end
show(PRE:close(), io.type(PRE))
try(PRE.read, PRE)
show(io.type(io.stdin), io.type(io.stdout), io.type(io.stderr), io.type(42))
show(io.stdout:close())
show(io.stderr:close())
show(pcall(io.close))
show(io.stdout:write("still open\n") == io.stdout)
show(io.stdout:seek("cur") ~= nil or true)
local tostr = tostring(io.stdout):gsub("0x%x+", "ADDR")
show(tostr)
do
  local f <close> = io.open(DIR .. "/c.txt", "w")
  f:write("closed by <close>")
end
show(io.open(DIR .. "/c.txt"):read("a"))
local f = io.open(DIR .. "/c.txt")
f = nil
collectgarbage()
show("collected")
]]

local function run(name, with)
  local sub = dir .. (with and "/with" or "/without")
  os.execute("rm -rf " .. sub .. " && mkdir " .. sub)
  local code = string.format(prologue, sub, with and "true" or "false") .. scripts[name]
  -- A count too large for memory must be Lua's "not enough memory": under
  -- a sanitizer, whose allocator aborts on such a size by default, let it
  -- return NULL as malloc does.
  local env = {}
  for _, v in ipairs({"ASAN_OPTIONS", "TSAN_OPTIONS"}) do
    local o = os.getenv(v)
    if o then env[#env + 1] = v .. "=" .. o .. ":allocator_may_return_null=1" end
  end
  local status, out = T.run_lua(code, #env > 0 and table.concat(env, " ") or nil)
  out = out:gsub("0x%x+", "ADDR"):gsub("/tmp/lua_%w+/without", "DIR")
           :gsub("/tmp/lua_%w+/with", "DIR"):gsub("/tmp/lua_%w+", "TMP")
           :gsub("==%d+==WARNING[^\n]*\n", "") -- a sanitizer's warnings (stderr)
  return status, out
end

for _, name in ipairs({"read_formats", "lines", "write", "open_modes",
                       "popen_execute", "std_and_pre"}) do
  T.case(name, function()
    local s0, without = run(name, false)
    local s1, with = run(name, true)
    if without ~= with or s0 ~= s1 then
      local a, b = {}, {}
      for l in without:gmatch("[^\n]*") do a[#a + 1] = l end
      for l in with:gmatch("[^\n]*") do b[#b + 1] = l end
      for i = 1, math.max(#a, #b) do
        if a[i] ~= b[i] then
          error(string.format("status %s vs %s; line %d differs:\nstock:  %s\ntether: %s",
                              s0, s1, i, tostring(a[i]), tostring(b[i])), 0)
        end
      end
    end
    assert(#with > 0 and s0 == 0, "the script failed:\n" .. with)
  end)
end

os.execute("rm -rf " .. dir)
T.done()

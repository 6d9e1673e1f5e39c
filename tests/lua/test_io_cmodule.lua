-- Handles that another C module makes with luaL_Stream (stream_module.c):
-- the module's read, write, lines and close work on them, a read of one
-- lets other threads run and can be cancelled, and close calls the C
-- module's own closef and returns what it returns.
local tether = require "tether"
local T = require "testlib"
package.cpath = package.cpath .. ";" ..
  assert(os.getenv("TETHER_LUA_TEST_MODULES"), "TETHER_LUA_TEST_MODULES is not set") .. "/?.so"
local sm = require "stream_module"

T.case("read, write, lines and close on a C module's handles", function()
  local r, w = sm.pipe()
  assert(io.type(r) == "file" and tostring(w):match("^file %("))
  assert(w:write("one\n", 2, "\n", 3.5, "\nrest") == w)
  local a, b = w:close()
  assert(a == true and b == "closed by the module", tostring(b))
  assert(sm.closed() == 1)
  assert(r:read("l") == "one")
  assert(r:read("n") == 2)
  local got = {}
  for l in r:lines("L") do got[#got + 1] = l end
  assert(got[1] == "\n" and got[2] == "3.5\n" and got[3] == "rest", got[1])
  assert(select(2, r:close()) == "closed by the module")
  assert(sm.closed() == 2 and io.type(r) == "closed file")
  T.raises("attempt to use a closed file", r.read, r)
end)

T.case("a read of one lets other threads run, and a cancel reaches it", function()
  local r, w = sm.pipe()
  w:setvbuf("no")
  local ready = tether.event()
  local t = tether.thread(function() ready:set() return r:read("l") end)
  assert(ready:wait(T.LIMIT))
  w:write("from main\n") -- only possible if the read let the GIL go
  local ok, line = t:join(T.LIMIT)
  assert(ok and line == "from main", tostring(line))
  w:write("par")
  local t2 = tether.thread(function() ready:set() return r:read("l") end)
  tether.sleep(0.02)
  t2:cancel()
  local ok2, err = t2:join(T.LIMIT)
  assert(ok2 == false and err == tether.Cancelled, tostring(err))
  w:write("tial\n")
  assert(r:read("l") == "partial")
  r:close()
  w:close()
end)

T.done()

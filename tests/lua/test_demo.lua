-- The demo script (examples/demo.lua) runs and checks itself.
local T = require "testlib"

T.case("demo.lua", function()
  local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
  local demo = here .. "/../../examples/demo.lua"
  local ticker = os.getenv("TETHER_TICKER")
  local status, out = T.run_lua(string.format("arg = {%s}\ndofile(%q)",
                                              ticker and string.format("%q", ticker) or "", demo))
  assert(status == 0 and out:find("demo done", 1, true), out)
  assert(out:find("cancelled a busy loop", 1, true), out)
end)

T.done()

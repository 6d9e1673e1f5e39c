-- Loaded before each file of Lua's own test suite by lua_suite.lua: the
-- module, and one more thread that competes for the GIL all along, in the
-- way SUITE_MODE says: "ticker" takes the GIL every millisecond (so the
-- file is asked to hand it over at a line, again and again), "spinner" is
-- CPU-bound (so the file gets the GIL at every switch interval only).
local tether = require "tether"
local mode = os.getenv("TETHER_SUITE_MODE") or "ticker"
if mode == "ticker" then
  tether.thread({daemon = true, name = "ticker"}, function()
    while true do tether.sleep(0.001) end
  end)
elseif mode == "spinner" then
  tether.thread({daemon = true, name = "spinner"}, function()
    local n = 0
    while true do n = n + 1 end
  end)
else
  error("TETHER_SUITE_MODE must be ticker or spinner")
end

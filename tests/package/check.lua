-- check.lua - what tests/package/deb.sh and rock.sh run in a clean
-- environment: the installed module loads, and a thread runs.
local tether = require "tether"
local where = package.searchpath("tether", package.cpath)
local t = tether.thread(function(a, b) return a * b end, 6, 7)
local ok, v = t:join()
assert(ok and v == 42, "the thread did not run: " .. tostring(v))
print("lua: require \"tether\" from " .. where .. ", a thread returned " .. v)

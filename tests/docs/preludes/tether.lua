-- For a fragment that uses the module without requiring it.
local tether = require "tether"
@BLOCK@

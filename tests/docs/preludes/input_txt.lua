-- For the producer/consumer example: the module, and an input.txt of two
-- lines of 5 bytes each (the example prints true 10).
local tether = require "tether"
do
  local f = assert(io.open("input.txt", "w"))
  f:write("hello\nworld\n")
  f:close()
end
@BLOCK@

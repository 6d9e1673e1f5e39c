-- One-line statements without calls run as one step, whatever the layout
-- (docs/lua.md, "What is atomic").  The cases are generated: every update
-- statement below, in every loop shape below, run by several threads at
-- once with the GIL changing hands often, must lose nothing.
--
-- The shapes matter: the hook that hands the GIL over is a line hook armed
-- from another thread, and the VM decides whether a line starts by
-- comparing with where the previous line hook left it; the body of a loop
-- on a line of its own (and the padding lines around it) is the layout in
-- which a stale position once split `t[#t + 1] = i` after its `#`.
local tether = require "tether"
local T = require "testlib"

tether.switchinterval(0.0002)

local NTHREADS = 4

-- name -> {setup, statement, check(env, total)}; `i` is the loop variable.
local statements = {
  append = {"t = {}", "t[#t + 1] = i",
            function(e, n) return #e.t == n, "#t = " .. #e.t end},
  concat = {"s = ''", "s = s .. 'x'",
            function(e, n) return #e.s == n, "#s = " .. #e.s end},
  histogram = {"h = {}", "h[i % 7] = (h[i % 7] or 0) + 1",
               function(e, n)
                 local sum = 0
                 for _, v in pairs(e.h) do sum = sum + v end
                 return sum == n, "sum = " .. sum
               end},
  global = {"x = 0", "x = x + 1",
            function(e, n) return e.x == n, "x = " .. e.x end},
  field = {"c = {n = 0}", "c.n = c.n + 1",
           function(e, n) return e.c.n == n, "c.n = " .. e.c.n end},
  append_len2 = {"t = {}", "t[#t + 1] = #t",
                 function(e, n) return #e.t == n, "#t = " .. #e.t end},
}

-- Loop shapes: %s is the statement, N the iteration count.
local loops = {
  for_own_line = "for i = 1, N do\n  %s\nend",
  for_one_line = "for i = 1, N do %s end",
  for_padded = "for i = 1, N do\n  local a = i\n  %s\n  local b = a + 1\nend",
  for_padded_after = "for i = 1, N do\n  %s\n  local b = i\n  b = b + 1\nend",
  while_loop = "local i = 0\nwhile i < N do\n  i = i + 1\n  %s\nend",
  repeat_loop = "local i = 0\nrepeat\n  i = i + 1\n  %s\nuntil i >= N",
  if_in_loop = "for i = 1, N do\n  if i > 0 then\n    %s\n  end\nend",
  nested_loops = "for j = 1, N // 10 do\n  for k = 1, 10 do\n    local i = j * 10 + k\n    %s\n  end\nend",
  in_function = "local function step(i)\n  %s\nend\nfor i = 1, N do\n  step(i)\nend",
  ipairs_loop = "local arr = {}\nfor k = 1, N do arr[k] = k end\nfor _, i in ipairs(arr) do\n  %s\nend",
  goto_loop = "local i = 0\n::top::\ni = i + 1\n%s\nif i < N then goto top end",
}

local function run(sname, lname, n)
  local st = statements[sname]
  local env = setmetatable({N = n}, {__index = _G})
  assert(load(st[1], "setup", "t", env))()
  local body = string.format(loops[lname], st[2])
  local fn = assert(load(body, sname .. "/" .. lname, "t", env))
  local ts = {}
  for k = 1, NTHREADS do ts[k] = tether.thread(fn) end
  for k = 1, NTHREADS do assert(ts[k]:join()) end
  local ok, what = st[3](env, NTHREADS * n)
  assert(ok, sname .. " in " .. lname .. ": " .. what .. ", expected " .. NTHREADS * n)
end

local snames, lnames = {}, {}
for k in pairs(statements) do snames[#snames + 1] = k end
for k in pairs(loops) do lnames[#lnames + 1] = k end
table.sort(snames)
table.sort(lnames)

for _, sname in ipairs(snames) do
  T.case(sname .. " in every loop shape", function()
    local n = sname == "concat" and 3000 or 30000
    local before = tether.gil_stats().switches
    for _, lname in ipairs(lnames) do run(sname, lname, n) end
    assert(tether.gil_stats().switches > before, "the threads never switched")
  end)
end

T.done()

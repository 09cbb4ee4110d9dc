-- Pipelining, 16 deep: every write carries 16 GETs back to back; wrk counts each
-- response, so Requests/sec is responses per second. (Latency figures are per batch
-- of 16, not per request.)
--   wrk -t1 -c64 -d5s -s bench/wrk/pipeline.lua http://127.0.0.1:8000/
local depth = 16

init = function(args)
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format(nil, "/")
   end
   req = table.concat(r)
end

request = function()
   return req
end

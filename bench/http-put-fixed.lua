-- wrk script: the same PUTs as http-put.lua (256-byte JSON values, 4 namespaces x 1000 keys), but
-- the 4 000 requests are formatted once in init() and there is no response() callback, so wrk
-- itself uses little CPU (about 0.6 s per 8 s run) and the nodes get the cores.
-- Usage: TOKEN=... wrk -s bench/http-put-fixed.lua ... http://127.0.0.1:8080
local token = os.getenv("TOKEN") or ""
local body = '{"v":"' .. string.rep("x", 248) .. '"}'
local reqs = {}
local n = 4000
init = function(args)
  for i = 0, n - 1 do
    local path = string.format("/v1/namespaces/bench-%d/keys/k%d", i % 4, (i * 7919) % 1000)
    reqs[i] = wrk.format("PUT", path, { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }, body)
  end
end
local counter = 0
request = function()
  counter = counter + 1
  if counter == n then counter = 0 end
  return reqs[counter]
end

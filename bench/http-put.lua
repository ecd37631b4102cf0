-- wrk script: PUT 256-byte JSON values to 4 namespaces x 1000 keys over the HTTP API.
-- Usage: TOKEN=$(cat cfgnode-data/admin.token) wrk -s bench/http-put.lua ... http://127.0.0.1:8080
local token = os.getenv("TOKEN") or ""
local body = '{"v":"' .. string.rep("x", 248) .. '"}'
local counter = 0

request = function()
  counter = counter + 1
  local path = string.format("/v1/namespaces/bench-%d/keys/k%d", counter % 4, (counter * 7919) % 1000)
  return wrk.format("PUT", path, {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
  }, body)
end

response = function(status, headers, body)
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. "\n")
  end
end

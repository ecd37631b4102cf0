-- wrk script: GET keys written by http-put.lua (run that first).
local token = os.getenv("TOKEN") or ""
local counter = 0

request = function()
  counter = counter + 1
  local path = string.format("/v1/namespaces/bench-%d/keys/k%d", counter % 4, (counter * 7919) % 1000)
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
end

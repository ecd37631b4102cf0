-- wrk script: etcd v3 JSON gateway puts (OP=put, the default) of 256-byte values to 4 prefixes x
-- 1000 keys, or linearizable gets (OP=get) of them: the same key space and value size as
-- bench/http-put.lua and bench/http-get.lua. Usage: OP=put wrk -s bench/etcd.lua ... http://LEADER
local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do
      r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0")
    end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then
      return ""
    end
    local c = 0
    for i = 1, 6 do
      c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0)
    end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

local value = base64('{"v":"' .. string.rep("x", 248) .. '"}')
local op = os.getenv("OP") or "put"
local path = op == "get" and "/v3/kv/range" or "/v3/kv/put"
local bodies = {}
for ns = 0, 3 do
  for k = 0, 999 do
    local key = base64(string.format("bench-%d/k%d", ns, k))
    if op == "get" then
      bodies[ns * 1000 + k] = '{"key":"' .. key .. '"}'
    else
      bodies[ns * 1000 + k] = '{"key":"' .. key .. '","value":"' .. value .. '"}'
    end
  end
end
local counter = 0

request = function()
  counter = counter + 1
  local body = bodies[(counter % 4) * 1000 + (counter * 7919) % 1000]
  return wrk.format("POST", path, { ["Content-Type"] = "application/json" }, body)
end

response = function(status, headers, body)
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. "\n")
  end
end

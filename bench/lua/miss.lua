-- Unique URLs: every request is a cache miss (fetch + insert).
-- Env: SALT (makes each run's URLs new), MAX (wrap after this many, 0: never).
local salt = os.getenv("SALT") or "0"
local max = tonumber(os.getenv("MAX") or "0")
local n = 0
local id = 0
function setup(thread)
    id = id + 1
    thread:set("tid", id)
end
function request()
    n = n + 1
    local k = n
    if max > 0 then k = n % max end
    return wrk.format("GET", "/bytes/1024?s=" .. salt .. "&t=" .. tostring(tid) .. "&n=" .. k)
end

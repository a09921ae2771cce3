-- wrk script for the Kubernetes admission benchmark (bench/k8s.sh).
--
-- Usage: wrk -t1 -c32 -d10s --latency -s bench/k8s.lua URL -- TEMPLATE_FILE [PREPARED]
--
-- POSTs the AdmissionReview in TEMPLATE_FILE with `__N__` replaced by a
-- number counted up per request (so every pod has its own name and review
-- uid, and every admission reserves a new allocation). The first PREPARED
-- requests (default 0) are formatted in `init`, before wrk starts its
-- clock, and later ones as they are sent: wrk shares the machine with the
-- server, and formatting a request costs wrk about 10 us of CPU. At the
-- end it prints one machine-readable line:
--   WRK_JSON {"requests":..,"rps":..,"p50_us":..,"p99_us":..,...}

local template
local n = 0
local prepared = {}
local next_prepared = 1

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then
    error("k8s.lua: cannot open " .. tostring(path) .. ": " .. tostring(err))
  end
  local data = f:read("*a")
  f:close()
  return data
end

local function format_next()
  n = n + 1
  local body = template:gsub("__N__", tostring(n))
  return wrk.format(nil, nil, nil, body)
end

function init(args)
  template = read_file(args[1])
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  -- A different start per run (warm-up, measured run: seconds apart), so
  -- names never repeat; kept below 2^53 and 14 digits, so `tostring`
  -- writes it as a whole number (LuaJIT writes larger ones as 1.7e+15).
  n = (os.time() % 100000) * 1000000
  for i = 1, tonumber(args[2] or "0") do
    prepared[i] = format_next()
  end
end

function request()
  local r = prepared[next_prepared]
  if r then
    prepared[next_prepared] = nil
    next_prepared = next_prepared + 1
    return r
  end
  return format_next()
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"rps":%.1f,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"non_2xx_3xx":%d,"socket_errors":%d,"bytes":%d}\n',
    summary.requests, summary.duration, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, e.status, socket_errors, summary.bytes))
end

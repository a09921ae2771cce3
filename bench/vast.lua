-- wrk script for the Vast door benchmark (bench/vast.sh).
--
-- Usage: wrk -t1 -c8 -d10s --latency -s bench/vast.lua URL -- METHOD KEY [BODY_FILE]
--
-- Sends METHOD to URL with `Authorization: Bearer KEY` (and, with
-- BODY_FILE, that body as application/json) on every request, and at the
-- end prints one machine-readable line:
--   WRK_JSON {"requests":..,"rps":..,"p50_us":..,"p99_us":..,...}

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then
    error("vast.lua: cannot open " .. tostring(path) .. ": " .. tostring(err))
  end
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  wrk.method = args[1] or "GET"
  wrk.headers["Authorization"] = "Bearer " .. (args[2] or "")
  if args[3] then
    wrk.body = read_file(args[3])
    wrk.headers["Content-Type"] = "application/json"
  end
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

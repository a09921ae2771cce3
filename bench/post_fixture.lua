-- wrk script for the Warden benchmark.
--
-- Usage: wrk -t1 -c32 -d10s --latency -s bench/post_fixture.lua \
--            http://127.0.0.1:PORT/skypilot -- FIXTURE.json
--
-- POSTs the exact bytes of FIXTURE.json (one JSON string literal, as
-- SkyPilot's RestfulAdminPolicy sends it) with Content-Type: application/json
-- on every request, and at the end prints one machine-readable line:
--   WRK_JSON {"requests":..,"duration_us":..,"rps":..,"p50_us":..,...}
-- Latencies are in microseconds (wrk's native unit).

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then
    error("post_fixture.lua: cannot open " .. tostring(path) .. ": " .. tostring(err))
  end
  local data = f:read("*a")
  f:close()
  return data
end

function init(args)
  local path = args[1] or os.getenv("WARDEN_BENCH_FIXTURE")
  if not path then
    error("post_fixture.lua: pass the fixture path after `--` or set WARDEN_BENCH_FIXTURE")
  end
  wrk.method = "POST"
  wrk.body = read_file(path)
  wrk.headers["Content-Type"] = "application/json"
  -- wrk.init() formats the request once after this hook returns, so every
  -- request carries the same bytes (and a matching Content-Length).
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"rps":%.1f,' ..
    '"p50_us":%d,"p75_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d,"non_2xx_3xx":%d,"socket_errors":%d,' ..
    '"timeouts":%d,"bytes":%d}\n',
    summary.requests, summary.duration, summary.requests / secs,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.max, e.status, socket_errors, e.timeout,
    summary.bytes))
end

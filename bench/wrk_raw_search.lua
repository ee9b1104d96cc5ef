-- wrk script for bench/bench_server.py: POST one image as the raw body of a search.
--
--   wrk -t1 -c32 -d8s -s bench/wrk_raw_search.lua http://127.0.0.1:8000 -- CROP.jpg "/v1/search/raw?k=10"
--
-- Every request sends the same bytes (the file given after --). At the end one line
-- "wrk-json {...}" gives the counts and latency percentiles (microseconds) that
-- bench_server.py reads; wrk's own report is printed as usual.

function init(args)
  local path = args[1] or error("usage: -- IMAGE_FILE [PATH]")
  local file = assert(io.open(path, "rb"))
  wrk.method = "POST"
  wrk.path = args[2] or "/v1/search/raw?k=10"
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = "image/jpeg"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'wrk-json {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end

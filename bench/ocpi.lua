-- wrk script: routed OCPI locations requests with the headers a real platform sends.
-- Parameters come from the environment (set by bench/loadgen.py):
--   BENCH_METHOD GET|PUT, BENCH_BASE_PATH (object id is appended), BENCH_AUTH ("Token <base64>"),
--   BENCH_FROM_CC/BENCH_FROM_PID, BENCH_TO_CC/BENCH_TO_PID, BENCH_OWNER_CC/BENCH_OWNER_PID (PUT body owner),
--   BENCH_ID_SPACE (distinct location ids per thread: each id is its own ordering group in the hub),
--   BENCH_RUN (a token loadgen.py draws for every run: request ids never repeat across runs, so the hub never
--   takes a later run's request for a sender's retry of an earlier one, "accepted before"),
--   BENCH_IDS (optional: "random" sends a random UUID as X-Request-ID and X-Correlation-ID of every request, as
--   platforms do, instead of the run token and a counter),
--   BENCH_ROUTES_FILE (optional: lines "auth<TAB>from_cc<TAB>from_pid<TAB>to_cc<TAB>to_pid"; requests cycle
--   through them in order, each with that caller's token and routing headers, instead of the fixed ones).
-- Every response is checked: HTTP 2xx and an OCPI "status_code":1000, or it counts as an error.
-- done() prints one line "BENCH_JSON {...}" that loadgen.py parses (latency in microseconds).

local method = os.getenv("BENCH_METHOD") or "GET"
local base_path = os.getenv("BENCH_BASE_PATH")
local id_space = tonumber(os.getenv("BENCH_ID_SPACE") or "10000")
local owner_cc = os.getenv("BENCH_OWNER_CC") or ""
local owner_pid = os.getenv("BENCH_OWNER_PID") or ""
local headers = {
  ["Authorization"] = os.getenv("BENCH_AUTH"),
  ["OCPI-from-country-code"] = os.getenv("BENCH_FROM_CC"),
  ["OCPI-from-party-id"] = os.getenv("BENCH_FROM_PID"),
  ["OCPI-to-country-code"] = os.getenv("BENCH_TO_CC"),
  ["OCPI-to-party-id"] = os.getenv("BENCH_TO_PID"),
}
if method ~= "GET" then headers["Content-Type"] = "application/json" end

local routes = nil
local routes_file = os.getenv("BENCH_ROUTES_FILE")
if routes_file and routes_file ~= "" then
  routes = {}
  for line in io.lines(routes_file) do
    local auth, fcc, fpid, tcc, tpid = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)$")
    if auth then table.insert(routes, {auth, fcc, fpid, tcc, tpid}) end
  end
end

local run_id = os.getenv("BENCH_RUN") or "0"
local random_ids = os.getenv("BENCH_IDS") == "random"
local request_prefix, correlation_prefix = "", ""  -- per thread, set by init()
local threads = {}
local counter = 0
non2xx, bad_ocpi = 0, 0  -- globals: done() reads them with thread:get

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(_)
  math.randomseed((tonumber(run_id, 16) or 0) + tid)
  request_prefix = "bench-" .. run_id .. "-" .. tid .. "-"
  correlation_prefix = "bench-corr-" .. run_id .. "-" .. tid .. "-"
end

-- A version 4 UUID (RFC 9562) from 16-bit draws: LuaJIT formats %x from doubles, exact below 2^32.
local function uuid4()
  local r = math.random
  return string.format("%04x%04x-%04x-4%03x-%04x-%04x%04x%04x", r(0, 0xffff), r(0, 0xffff), r(0, 0xffff),
    r(0, 0xfff), 0x8000 + r(0, 0x3fff), r(0, 0xffff), r(0, 0xffff), r(0, 0xffff))
end

local function location(id)
  return '{"country_code":"' .. owner_cc .. '","party_id":"' .. owner_pid .. '","id":"' .. id ..
    '","publish":true,"address":"Stationsplein 1","city":"Utrecht","country":"NLD",' ..
    '"coordinates":{"latitude":"52.089","longitude":"5.110"},"time_zone":"Europe/Amsterdam",' ..
    '"last_updated":"2024-01-01T00:00:00Z"}'
end

function request()
  counter = counter + 1
  local id = "LOC" .. ((tid - 1) * id_space + counter % id_space)
  if random_ids then
    headers["X-Request-ID"], headers["X-Correlation-ID"] = uuid4(), uuid4()
  else
    headers["X-Request-ID"] = request_prefix .. counter
    headers["X-Correlation-ID"] = correlation_prefix .. counter
  end
  if routes then
    local r = routes[(counter + (tid - 1) * 7919) % #routes + 1]
    headers["Authorization"] = r[1]
    headers["OCPI-from-country-code"], headers["OCPI-from-party-id"] = r[2], r[3]
    headers["OCPI-to-country-code"], headers["OCPI-to-party-id"] = r[4], r[5]
  end
  local body = nil
  if method ~= "GET" then body = location(id) end
  return wrk.format(method, base_path .. "/" .. id, headers, body)
end

function response(status, _, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif not string.find(body, '"status_code":1000', 1, true) then
    bad_ocpi = bad_ocpi + 1
  end
end

function done(summary, latency, _)
  local n2, bad = 0, 0
  for _, t in ipairs(threads) do
    n2 = n2 + t:get("non2xx")
    bad = bad + t:get("bad_ocpi")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"non2xx":%d,"bad_ocpi":%d,' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d}}\n',
    summary.requests, summary.duration, n2, bad, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.max))
end

-- wrk script: POST /api/v1/purchases for random members, each request with its own
-- Idempotency-Key and receipt_id (run id + thread number + counter: unique across threads
-- and runs; never a long run of digits, which the API would mask as a card number). Every answer other than 201 counts as an error.
--   wrk ... -s bench/purchase.lua http://127.0.0.1:PORT/api/v1/purchases -- KEY CARDS_FILE RUN_ID
-- done() prints one line "BENCH key=value ..." that bench/run.sh reads.
-- The basket is the one in bench/payload.py.

local threads = {}

function setup(thread)
   thread:set("tid", #threads + 1)
   table.insert(threads, thread)
end

local cards, counter, headers, occurred_at, run_id
statuses, errors, sample = {}, 0, ""

function init(args)
   local key, cards_path = args[1], args[2]
   run_id = args[3] or tostring(os.time())
   cards = {}
   for line in io.lines(cards_path) do
      if #line > 0 then cards[#cards + 1] = line end
   end
   if #cards == 0 then error("no card numbers in " .. cards_path) end
   math.randomseed(os.time() * 1000 + tid)
   counter = 0
   occurred_at = os.date("!%Y-%m-%dT%H:%M:%SZ")
   headers = {
      ["Host"] = wrk.host .. ":" .. wrk.port,
      ["Authorization"] = "Api-Key " .. key,
      ["Content-Type"] = "application/json",
   }
end

local body_format = '{"card_number":"%s","receipt_id":"R-%s","occurred_at":"%s",'
   .. '"currency":"EUR","total":"49.90","lines":['
   .. '{"sku":"SHAMPOO-250","category":"hair","quantity":"2","unit_price":"12.45"},'
   .. '{"sku":"PERFUME-50","category":"fragrance","quantity":"1","unit_price":"25.00"}]}'

function request()
   counter = counter + 1
   -- letters between the numbers: the API masks long digit runs as card numbers
   local id = run_id .. "t" .. tid .. "n" .. counter
   headers["Idempotency-Key"] = "K-" .. id
   local body = string.format(body_format, cards[math.random(#cards)], id, occurred_at)
   return wrk.format("POST", nil, headers, body)
end

function response(status, _headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status ~= 201 then
      errors = errors + 1
      if sample == "" then sample = status .. " " .. string.sub(body or "", 1, 300) end
   end
end

function done(summary, latency, requests)
   local by_status, bad, first = {}, 0, ""
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses")) do
         by_status[status] = (by_status[status] or 0) + n
      end
      bad = bad + thread:get("errors")
      if first == "" then first = thread:get("sample") end
   end
   local codes = {}
   for status, n in pairs(by_status) do codes[#codes + 1] = status .. ":" .. n end
   table.sort(codes)
   local e = summary.errors
   local seconds = summary.duration / 1e6
   io.write(string.format(
      "BENCH requests=%d seconds=%.2f rps=%.1f p50_ms=%.2f p95_ms=%.2f p99_ms=%.2f "
      .. "max_ms=%.2f mean_ms=%.2f non201=%d connect_errors=%d read_errors=%d "
      .. "write_errors=%d timeouts=%d statuses=%s\n",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50) / 1000, latency:percentile(95) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000,
      bad, e.connect, e.read, e.write, e.timeout, table.concat(codes, ",")))
   if first ~= "" then io.write("BENCH_SAMPLE_ERROR " .. first .. "\n") end
end

-- The Lua hooks of every REST request. First in http_filters, so it sees the
-- request as the client sent it and, on the way back, the transcoded response.
--
-- Request: remember the client's HTTP method for the access log (the transcoder
-- turns every request into a gRPC POST).
--
-- Response: every 429 carries Retry-After, and what a route wants is data, in
-- its metadata under "envoy.filters.http.lua":
--   success_status        e.g. "202" on the session commands: the spec answers an
--                         accepted command 202 Accepted, the transcoder says 200
--   success_content_type  e.g. "application/x-ndjson" on the watch stream
-- Both apply only to a 200: errors keep their status and JSON error body (the
-- transcoder holds unary headers until the trailers, so a refused command never
-- shows 200 here). Headers only: a streamed body is never buffered.

-- Details of the hop to the gRPC server (the transcoder copies the grpc-* ones
-- into HTTP headers); not part of the REST contract.
local HOP_HEADERS = {
  "grpc-status", "grpc-message", "grpc-status-details-bin",
  "grpc-accept-encoding", "grpc-encoding",
  "x-envoy-upstream-healthchecked-cluster",
}

function envoy_on_request(handle)
  handle:streamInfo():dynamicMetadata():set("callcontrol", "method", handle:headers():get(":method"))
end

function envoy_on_response(handle)
  local headers = handle:headers()
  if headers:get(":status") == "200" then
    local route = handle:metadata()
    local status = route:get("success_status")
    if status ~= nil then
      headers:replace(":status", status)
    end
    local content_type = route:get("success_content_type")
    if content_type ~= nil then
      headers:replace("content-type", content_type)
    end
  end
  -- Envoy's rate limiter sets Retry-After; a RESOURCE_EXHAUSTED from the server
  -- (also 429) gets the same hint, so every 429 tells the client when to retry.
  if headers:get(":status") == "429" and headers:get("retry-after") == nil then
    headers:add("retry-after", "1")
  end
  for _, name in ipairs(HOP_HEADERS) do
    headers:remove(name)
  end
end

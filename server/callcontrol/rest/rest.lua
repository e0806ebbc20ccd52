-- The Lua hooks of every REST request. First in http_filters, so it sees the
-- request as the client sent it and, on the way back, the transcoded response.
--
-- Request: remember the client's HTTP method for the access log (the transcoder
-- turns every request into a gRPC POST). On a route whose metadata lists
-- "body_fields" (the request message's fields, both spellings, rendered from the
-- descriptor), a JSON object body with any other top-level key is refused 400
-- naming it: the transcoder would silently drop it ({"Cause": ...} would hang up
-- with the default cause). A known key whose value is null is refused too (the
-- transcoder reads it as omitted; the schema says the field's type).
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

-- The top-level keys of a JSON object ({name = raw text between the quotes,
-- null = whether its value is null}), or nil
-- when the text is not an object; a malformed body is left to the transcoder,
-- which answers its own parse error. Own code: Envoy's Lua has no JSON library,
-- and only the top-level keys are needed. Jumps from one structural character
-- to the next; strings are skipped whole, honouring backslash escapes.
local function top_level_keys(text)
  local start = text:find("%S")
  if start == nil or text:sub(start, start) ~= "{" then
    return nil
  end
  local keys = {}
  local depth, pos, expect_key = 0, start, true
  while true do
    pos = text:find('[{}%[%],"]', pos)
    if pos == nil then
      return nil
    end
    local c = text:sub(pos, pos)
    if c == '"' then
      local close = pos + 1
      while true do
        close = text:find('["\\]', close)
        if close == nil then
          return nil
        end
        if text:sub(close, close) == '"' then
          break
        end
        close = close + 2
      end
      if depth == 1 and expect_key then
        local is_null = text:find("^%s*:%s*null", close + 1) ~= nil
        keys[#keys + 1] = {name = text:sub(pos + 1, close - 1), null = is_null}
        expect_key = false
      end
      pos = close + 1
    else
      if c == "{" or c == "[" then
        depth = depth + 1
      elseif c == "}" or c == "]" then
        depth = depth - 1
        if depth == 0 then
          return keys
        end
      elseif depth == 1 then
        expect_key = true -- a comma between members
      end
      pos = pos + 1
    end
  end
end

-- A key as it may appear in an error message: short, and only name characters.
local function printable(key)
  return (key:sub(1, 64):gsub("[^%w_.%-]", "?"))
end

local function check_body_fields(handle, allowed)
  local body = handle:body()
  if body == nil or body:length() == 0 then
    return
  end
  local keys = top_level_keys(body:getBytes(0, body:length()))
  if keys == nil then
    return
  end
  for _, key in ipairs(keys) do
    if key.null and allowed[key.name] ~= nil then
      -- The transcoder would read null as "omitted"; the schema says a string.
      handle:respond(
        {[":status"] = "400", ["content-type"] = "text/plain"},
        'field "' .. printable(key.name) .. '" is null in the request body; omit it instead'
      )
      return
    end
    if allowed[key.name] == nil then
      local names = {}
      for name, _ in pairs(allowed) do
        names[#names + 1] = name
      end
      table.sort(names)
      handle:respond(
        {[":status"] = "400", ["content-type"] = "text/plain"},
        'unknown field "' .. printable(key.name) .. '" in the request body; accepted: ' .. table.concat(names, ", ")
      )
      return
    end
  end
end

function envoy_on_request(handle)
  handle:streamInfo():dynamicMetadata():set("callcontrol", "method", handle:headers():get(":method"))
  local allowed = handle:metadata():get("body_fields")
  if allowed ~= nil then
    check_body_fields(handle, allowed)
  end
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
  -- The server's limiter sends its wait as "retry-after" metadata; any other
  -- RESOURCE_EXHAUSTED (also 429) gets a one-second hint, so every 429 says when.
  if headers:get(":status") == "429" and headers:get("retry-after") == nil then
    headers:add("retry-after", "1")
  end
  for _, name in ipairs(HOP_HEADERS) do
    headers:remove(name)
  end
end

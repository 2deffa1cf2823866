#!lua flags=no-writes
-- Documents of the live generation, in one call (runs on replicas and under OOM).
-- KEYS[1] live pointer "{<prefix>}:live"; ARGV[1] "{<prefix>}"; ARGV[2..] document keys.
-- The document keys are derived here from the pointer; they share the pointer's hash tag,
-- so they live in its cluster slot. Returns {generation, json or false per key} or {false}.
local generation = redis.call('GET', KEYS[1])
if not generation then
  return {false}
end
local out = {generation}
local base = ARGV[1] .. ':g' .. generation .. ':'
for i = 2, #ARGV do
  out[i] = redis.call('GET', base .. ARGV[i])
end
return out

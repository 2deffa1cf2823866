#!lua
-- One batch of a lane, applied atomically: the checkpoint compare-and-set, every document
-- guarded by its version, then the new checkpoint. The shebang line makes Redis (7.0+) treat
-- this as a flagged script that may write: when used_memory is above maxmemory the whole call
-- is refused with OOM before it starts, so a batch is never half-applied.
--
-- KEYS[1]   checkpoint hash          ARGV[1] checkpoint field ("<lane>:g<generation>")
-- KEYS[2]   versions hash            ARGV[2] expected checkpoint ("" = none stored)
-- KEYS[2+i] document i               ARGV[3] new checkpoint
--                                    ARGV[4] TTL in seconds ("0" = none)
--                                    ARGV[5..] per document: key, version, JSON ("" = delete)
--
-- Versions hash values: "<v>" for a document written at v, "-<v>" for a tombstone at v.
-- A document is written when the held version is older; at an equal version it is written
-- again only when its value is gone (expired or evicted) and the held version is not a
-- tombstone. Returns {"ok", written, skipped}, {"done", 0, 0} when the new checkpoint is
-- already stored (the same batch landed before), or {"conflict", stored}.
local stored = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if stored ~= ARGV[2] then
  if stored == ARGV[3] then
    return {'done', 0, 0}
  end
  return {'conflict', stored}
end
local ttl = tonumber(ARGV[4])
local written, skipped = 0, 0
for i = 1, #KEYS - 2 do
  local a = 5 + 3 * (i - 1)
  local name, version, doc = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2]
  local key = KEYS[i + 2]
  local held = tonumber(redis.call('HGET', KEYS[2], name) or '0')
  local apply = math.abs(held) < version
  if not apply and held == version and doc ~= '' then
    apply = redis.call('EXISTS', key) == 0
  end
  if apply then
    if doc == '' then
      redis.call('DEL', key)
      redis.call('HSET', KEYS[2], name, '-' .. ARGV[a + 1])
    else
      if ttl > 0 then
        redis.call('SET', key, doc, 'EX', ttl)
      else
        redis.call('SET', key, doc)
      end
      redis.call('HSET', KEYS[2], name, ARGV[a + 1])
    end
    written = written + 1
  else
    skipped = skipped + 1
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return {'ok', written, skipped}

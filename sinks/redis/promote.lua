#!lua
-- Make a generation live, atomically, only if its lane has written it at least as far as the
-- live generation has come (readers never see documents go back, nor an empty model).
-- KEYS[1] live pointer, KEYS[2] checkpoint hash
-- ARGV[1] generation, ARGV[2] its checkpoint field ("<lane>:g<generation>"), ARGV[3] lane
-- Returns {"ok", previous live generation or ""}, {"empty"} when the generation has no
-- checkpoint, or {"behind", its checkpoint, live generation, live checkpoint}.
local mine = redis.call('HGET', KEYS[2], ARGV[2])
if not mine then
  return {'empty'}
end
local live = redis.call('GET', KEYS[1])
if live and live ~= ARGV[1] then
  local theirs = redis.call('HGET', KEYS[2], ARGV[3] .. ':g' .. live)
  if theirs then
    local mt, mg = string.match(mine, '^(%d+)/(%d+)$')
    local tt, tg = string.match(theirs, '^(%d+)/(%d+)$')
    mt, mg, tt, tg = tonumber(mt), tonumber(mg), tonumber(tt), tonumber(tg)
    if mt < tt or (mt == tt and mg < tg) then
      return {'behind', mine, live, theirs}
    end
  end
end
return {'ok', redis.call('SET', KEYS[1], ARGV[1], 'GET') or ''}

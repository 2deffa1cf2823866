#!lua
-- Make a generation live, atomically, only if a lane has filled it (has a checkpoint).
-- KEYS[1] live pointer, KEYS[2] checkpoint hash; ARGV[1] generation, ARGV[2] checkpoint field.
-- Returns the previous live generation ("" when none), or false when the generation is empty.
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then
  return false
end
return redis.call('SET', KEYS[1], ARGV[1], 'GET') or ''

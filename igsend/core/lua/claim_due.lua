-- Moves due ids from the delayed set to the moving list and returns them; they count as published from now on
-- (a mover that dies before publishing leaves them to the sweeper).
-- KEYS: delayed, moving, pending. ARGV: batch size.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #ids > 0 then
  redis.call('ZREM', KEYS[1], unpack(ids))
  redis.call('RPUSH', KEYS[2], unpack(ids))
  for _, id in ipairs(ids) do redis.call('ZADD', KEYS[3], now, id) end
end
return ids

-- A read receipt for a delivered job: its compact record (lua/finish.lua) gains when the person first read it,
-- under the same TTL.
-- KEYS: the done key. ARGV: Unix seconds of the receipt.
-- Returns 1 when marked, 0 when it was read already or has no delivered record (expired, or not delivered yet).
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local doc = cjson.decode(raw)
if doc['rd'] then return 0 end
doc['rd'] = tonumber(ARGV[1])
redis.call('SET', KEYS[1], cjson.encode(doc), 'KEEPTTL')
return 1

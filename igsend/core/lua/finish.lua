-- A delivered job shrinks to one small string: the hash and its attempt log are replaced by a compact JSON
-- document (kind, account, recipient, Meta's ids, times; the attempt log only when there was more than one
-- attempt), kept for the delivered retention. The text of the message is not kept: it was sent.
-- KEYS: job hash, attempts list, done key, lock, inflight, outcome stream, dlq, dlq index, the account's hash of
--       sent message ids for this hour ('igsend:sent:' for none: igsend/core/sent.py), the account's and every
--       account's per-minute series for today ('igsend:series:' twice for none: igsend/core/series.py), then
--       keys to delete (breaker).
-- ARGV: job id, recipient_id, message_id ('' for none), attempt entry (JSON), now, delivered ttl,
--       stream max length, the sent hash's ttl, the message id's digest (its field), the prefix of Instagram
--       message ids (stored as '~'), the job id as the sent hash keeps it (compact), the series' ttl, this
--       minute's bit offset of 'delivered', of the first latency bucket, then the latency buckets' upper bounds
if redis.call('EXISTS', KEYS[3]) == 1 then
  -- Recorded already (this call again, after a failover or a shortfall of replica acks): keep the record, but
  -- still write (its TTL), so a WAIT after this call covers the record on this primary.
  redis.call('EXPIRE', KEYS[3], ARGV[6])
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
  redis.call('ZREM', KEYS[5], ARGV[1])
  return 0
end
local rec = redis.call('HMGET', KEYS[1], 'kind', 'account', 'recipient', 'attempts', 'created_at')
local entry = cjson.decode(ARGV[4])
local now = tonumber(ARGV[5])
local created = tonumber(rec[5] or ARGV[5]) or now
-- Every byte here is kept a day for every delivered message: the delivery time as milliseconds after the
-- creation, the attempt count only when it is not 1, Meta's message id without the prefix all of them share.
local doc = {k = rec[1], a = rec[2], r = rec[3], c = created, e = math.floor((now - created) * 1000 + 0.5),
             ms = entry['latency_ms']}
local attempts = tonumber(rec[4] or '1') or 1
if attempts ~= 1 then doc['n'] = attempts end
if ARGV[2] ~= rec[3] then doc['ri'] = ARGV[2] end  -- Meta answers with the recipient's id: usually the same
if ARGV[3] ~= '' then
  if string.sub(ARGV[3], 1, #ARGV[10]) == ARGV[10] then
    doc['mi'] = '~' .. string.sub(ARGV[3], #ARGV[10] + 1)
  else
    doc['mi'] = ARGV[3]
  end
end
local previous = redis.call('LRANGE', KEYS[2], 0, -1)
if #previous > 0 then
  local log = {}
  for i, raw in ipairs(previous) do log[i] = cjson.decode(raw) end
  log[#log + 1] = entry
  doc['l'] = log
end
redis.call('SET', KEYS[3], cjson.encode(doc), 'EX', ARGV[6])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[7], '*', 'id', ARGV[1], 'status', 'delivered',
           'account', rec[2] or '', 'kind', rec[1] or '', 'message_id', ARGV[3], 'at', ARGV[5])
-- A copy that found this job orphaned while its record was out of reach (a failover) filed it as unknown:
-- Meta's answer says delivered, so it leaves the DLQ.
redis.call('HDEL', KEYS[7], ARGV[1])
redis.call('ZREM', KEYS[8], ARGV[1])
-- The console's charts: delivered this minute, and how long from queued to Meta's answer.
-- A day's string needs its TTL set now and then, not at every delivery (a command fewer per message and key):
-- at the minute's first delivery, which the minute's count tells.
if KEYS[10] ~= 'igsend:series:' then
  local bucket = 0
  for i = 15, #ARGV do
    if now - created <= tonumber(ARGV[i]) then break end
    bucket = bucket + 1
  end
  local latency = tonumber(ARGV[14]) + 16 * bucket
  for i = 10, 11 do
    local counts = redis.call('BITFIELD', KEYS[i], 'OVERFLOW', 'SAT', 'INCRBY', 'u16', ARGV[13], 1,
                              'INCRBY', 'u16', latency, 1)
    if counts[1] == 1 then redis.call('EXPIRE', KEYS[i], ARGV[12]) end
  end
end
-- Meta's message id leads back to this job: a read receipt or a reaction finds it, and a reconciliation of
-- another job never takes it. The hash's TTL outlives its entries by an hour (sent.keep_seconds), so setting it
-- at the first entry of each minute keeps every entry as long as its record: the same HSET writes a field
-- for the minute ('m' and the minute of the hour; a digest is 12 characters), and answers 2 when it is new.
if KEYS[9] ~= 'igsend:sent:' then
  local minute = 'm' .. math.floor(now / 60) % 60
  if redis.call('HSET', KEYS[9], ARGV[9], ARGV[11], minute, '') == 2 then
    redis.call('EXPIRE', KEYS[9], ARGV[8])
  end
end
for i = 12, #KEYS do redis.call('DEL', KEYS[i]) end
return 1

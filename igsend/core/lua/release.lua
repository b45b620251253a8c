-- An ordered job is done with (delivered, dead, unknown, cancelled, or released by an operator): it leaves its
-- conversation, and the job now at the head, if it was parked waiting for this one, is made due now (the
-- scheduler publishes it). Idempotent: a second call finds nothing to do.
-- KEYS: conversation, delayed. ARGV: job id, the job-record key prefix ('igsend:job:').
redis.call('ZREM', KEYS[1], ARGV[1])
local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
if head then
  local key = ARGV[2] .. head
  if redis.call('HGET', key, 'waiting_for') then
    redis.call('HDEL', key, 'waiting_for', 'reason')
    local t = redis.call('TIME')
    local due = tonumber(t[1]) + tonumber(t[2]) / 1000000
    local scheduled = tonumber(redis.call('HGET', key, 'next_attempt_at') or '')
    if scheduled and scheduled > due then due = scheduled end  -- a scheduled one still waits for its time
    redis.call('ZADD', KEYS[2], string.format('%.6f', due), head)
  end
  return head
end
return ''

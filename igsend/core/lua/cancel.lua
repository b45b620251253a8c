-- Cancel a job that has not started sending; returns the status it had ('' for a raw publish that no worker
-- had taken yet: its record is created, cancelled).
-- KEYS: job, pending, done. ARGV: job id, reason, now, record ttl.
if redis.call('EXISTS', KEYS[3]) == 1 then return 'delivered' end
local status = redis.call('HGET', KEYS[1], 'status')
if status == false or status == 'queued' or status == 'retrying' then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'status', 'cancelled', 'reason', ARGV[2], 'inflight', '',
             'updated_at', ARGV[3])
  redis.call('HSETNX', KEYS[1], 'created_at', ARGV[3])
  redis.call('HSETNX', KEYS[1], 'attempts', 0)
  redis.call('HDEL', KEYS[1], 'next_attempt_at', 'slot_at')
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return status or ''

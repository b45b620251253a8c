-- Cancel a job that has not started sending; returns the status it had ('' for a raw publish that no worker
-- had taken yet: its record is created, cancelled).
-- KEYS: job, pending, done, delayed, outcome stream. ARGV: job id, reason, now, record ttl, '1' when a job without
-- a record is not to be created cancelled (a caller's cancel of an id: 'missing'), the stream's max length.
-- The end is announced on the outcome stream in the same step, as lua/finish.lua does (igsend.core.waiting wakes
-- on it).
if redis.call('EXISTS', KEYS[3]) == 1 then return 'delivered' end
local status = redis.call('HGET', KEYS[1], 'status')
if status == false and ARGV[5] == '1' then return 'missing' end
if status == false or status == 'queued' or status == 'retrying' or status == 'scheduled' then
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'status', 'cancelled', 'reason', ARGV[2], 'inflight', '',
             'updated_at', ARGV[3])
  redis.call('HSETNX', KEYS[1], 'created_at', ARGV[3])
  redis.call('HSETNX', KEYS[1], 'attempts', 0)
  redis.call('HDEL', KEYS[1], 'next_attempt_at', 'slot_at')
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  local rec = redis.call('HMGET', KEYS[1], 'account', 'kind')
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[6], '*', 'id', ARGV[1], 'status', 'cancelled',
             'account', rec[1] or '', 'kind', rec[2] or '', 'message_id', '', 'at', ARGV[3])
  redis.call('ZREM', KEYS[2], ARGV[1])
  if KEYS[4] then redis.call('ZREM', KEYS[4], ARGV[1]) end  -- a scheduled or retrying job waits there
  -- an ordered job lets the next of its conversation go (as lua/release.lua does)
  local conversation = redis.call('HGET', KEYS[1], 'conversation')
  if conversation and KEYS[4] then
    redis.call('ZREM', conversation, ARGV[1])
    local head = redis.call('ZRANGE', conversation, 0, 0)[1]
    local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[1])
    if head and redis.call('HGET', prefix .. head, 'waiting_for') then
      redis.call('HDEL', prefix .. head, 'waiting_for', 'reason')
      local due = tonumber(redis.call('HGET', prefix .. head, 'next_attempt_at') or '') or 0
      redis.call('ZADD', KEYS[4], math.max(due, tonumber(ARGV[3])), head)
    end
  end
end
return status or ''

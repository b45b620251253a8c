-- Admission: may this job POST now? One atomic step that reads the job record, its lock, the account's state
-- and the account's GCRA rate limiter, on Redis's clock (TIME), shared by every worker.
-- KEYS: job, lock, account, limiter, delayed, held, pending, inflight, done, conversation (or the bare
--       'igsend:conv:' for a job that is not ordered), the moment the window opened (the person's last message,
--       or the comment a private reply answers: igsend.core.inbound)
-- ARGV: job_id, lock_ttl_ms, rate, max_inline_wait, record_ttl, message_json ('' until the script asks for it
--       with 'need_message': a producer wrote it into the record already), kind, account, recipient,
--       late_tolerance, job-record key prefix, window seconds, the caller's last_user_message_at ('' for none)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local job_id = ARGV[1]
-- Whatever admission decides, this copy's message has reached a worker: the lost-message sweep lets go of it.
redis.call('ZREM', KEYS[7], job_id)
if redis.call('EXISTS', KEYS[9]) == 1 then return {'done', 'delivered'} end  -- compacted when delivered
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  -- A job published by a raw send_task has no record yet: create it, with the message the caller sends again.
  if ARGV[6] == '' then return {'need_message'} end
  status = 'queued'
  redis.call('HSET', KEYS[1], 'id', job_id, 'status', status, 'kind', ARGV[7], 'account', ARGV[8],
             'recipient', ARGV[9], 'message', ARGV[6], 'attempts', 0, 'created_at', now, 'updated_at', now)
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  local send_at = tonumber(cjson.decode(ARGV[6])['send_at'] or '')
  if send_at and send_at > now + 0.5 then  -- a raw client's scheduled message: it waits like a producer's
    redis.call('HSET', KEYS[1], 'status', 'scheduled', 'next_attempt_at', string.format('%.6f', send_at))
    redis.call('EXPIRE', KEYS[1], math.ceil(send_at - now) + tonumber(ARGV[5]))
    redis.call('ZADD', KEYS[5], string.format('%.6f', send_at), job_id)
    return {'early', tostring(send_at)}
  end
end
if status == 'delivered' or status == 'dead' or status == 'unknown' or status == 'cancelled' then
  return {'done', status}
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'busy', ''} end
local rec = redis.call('HMGET', KEYS[1], 'inflight', 'next_attempt_at', 'slot_at', 'attempts', 'created_at')
if rec[1] and rec[1] ~= '' then return {'orphaned', rec[1]} end
local max_wait = tonumber(ARGV[4])
local due = tonumber(rec[2] or '')
if (status == 'retrying' or status == 'scheduled') and due and due > now + max_wait then
  return {'early', tostring(due)}
end

-- A window that closed while the message waited (scheduled, throttled, retrying, behind an ordered one): it is
-- dead-lettered, not POSTed into Meta's error.
local opened = tonumber(redis.call('GET', KEYS[11]) or '')
local given = tonumber(ARGV[13])
if given and (not opened or given > opened) then opened = given end
if opened and now >= opened + tonumber(ARGV[12]) then return {'window_closed', tostring(opened)} end

-- An ordered job goes only from the head of its conversation. One behind a job still owed a send (or a dead one
-- that holds the conversation) parks, holding no worker and no prefetch slot: the head's end makes it due.
-- A job no longer in its conversation's set is done with as far as the order goes (a dead one replayed after it
-- let the next go): it waits for no one, and no one's end would make it due.
if KEYS[10] ~= 'igsend:conv:' and redis.call('ZSCORE', KEYS[10], job_id) then
  for _ = 1, 50 do
    local head = redis.call('ZRANGE', KEYS[10], 0, 0)[1]
    if not head or head == job_id then break end
    local state = redis.call('HGET', ARGV[11] .. head, 'status')
    if state and state ~= 'delivered' and state ~= 'cancelled' and state ~= 'unknown' then
      redis.call('HSET', KEYS[1], 'waiting_for', head, 'updated_at', now,
                 'reason', 'waiting for job ' .. head .. ' (ordered conversation)')
      return {'waiting', head}
    end
    redis.call('ZREM', KEYS[10], head)  -- done with, or its record expired: it no longer holds anyone
  end
  redis.call('HDEL', KEYS[1], 'waiting_for')
end

local acct = redis.call('HMGET', KEYS[3], 'health', 'paused_until', 'slowdown', 'slowdown_until')
if acct[1] == 'broken' then
  redis.call('ZADD', KEYS[6], now, job_id)
  redis.call('HSET', KEYS[1], 'status', 'queued', 'reason', 'held: account marked unhealthy', 'updated_at', now)
  return {'held', ''}
end
local paused = tonumber(acct[2] or '')
if paused and paused > now then
  redis.call('ZADD', KEYS[5], paused, job_id)
  redis.call('HSET', KEYS[1], 'status', 'retrying', 'next_attempt_at', paused, 'updated_at', now,
             'reason', 'account paused by Meta throttling')
  return {'deferred', tostring(paused)}
end

local slot = tonumber(rec[3] or '')
if slot and slot > now + max_wait then return {'early', tostring(slot)} end
if not slot or slot < now - tonumber(ARGV[10]) then
  -- Book the next free slot (GCRA without burst: slots are exactly 1/rate apart).
  local factor = 1
  if acct[3] and tonumber(acct[4] or '0') > now then factor = tonumber(acct[3]) end
  local rate = tonumber(ARGV[3]) * factor
  local tat = tonumber(redis.call('GET', KEYS[4]) or '0')
  if tat < now then tat = now end
  slot = tat
  local next_tat = tat + 1 / rate
  redis.call('SET', KEYS[4], string.format('%.6f', next_tat), 'PX', math.ceil((next_tat - now) * 1000) + 60000)
  if slot > now + max_wait then
    redis.call('HSET', KEYS[1], 'slot_at', string.format('%.6f', slot), 'next_attempt_at',
               string.format('%.6f', slot), 'updated_at', now)
    redis.call('ZADD', KEYS[5], string.format('%.6f', slot), job_id)
    return {'parked', string.format('%.6f', slot)}
  end
end
local attempt = tonumber(rec[4] or '0') + 1
redis.call('HSET', KEYS[1], 'status', 'sending', 'inflight', attempt, 'attempts', attempt, 'updated_at', now,
           'inflight_at', now)  -- when the attempt began: what a reconciliation of its lost answer looks after
redis.call('HDEL', KEYS[1], 'slot_at', 'next_attempt_at', 'reason')
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
-- This copy sends it: an entry it left in the delayed set (a retry or a parked slot that another copy reached
-- first) is stale, and would only publish one more copy and list a job that is sending as waiting.
redis.call('ZREM', KEYS[5], job_id)
redis.call('ZADD', KEYS[8], now + tonumber(ARGV[2]) / 1000, job_id)  -- until an outcome is recorded
return {'go', string.format('%.6f', math.max(0, slot - now)), tostring(attempt), rec[5] or tostring(now)}

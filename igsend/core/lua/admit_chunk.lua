-- Admission for several jobs of one chunk (igsend.core.chunks): one account, one send class, one call. It decides,
-- for each job, what lua/admit.lua decides for a plain job (one the producers queued, that has not been sent, is
-- not ordered nor scheduled, has no booked slot, no upload, no tag, no caller's last_user_message_at), atomically
-- and on Redis's clock, and reads the account's state and its rate limiter once for all. Anything else ('single')
-- goes through admit.lua itself, job by job, in the worker. A job whose status is 'queued' holds no lock: admission
-- sets 'sending' and the lock in one step, and every step that sets 'queued' again (hold, replay) ends the lock.
-- KEYS: pending, inflight, delayed, account, limiter, then each job's record and its lock
-- ARGV: lock_ttl_ms, rate, max_inline_wait, the account's name, whether it uses Facebook Login ('1'/'0'), the
--       window keys' prefixes (the person's last message, a comment: igsend.core.inbound), the window's seconds
--       (24-hour, private reply), then each job's id
-- Returns five items for each job: 'go', wait, attempt, created_at, message | 'parked', slot, '', '', '' |
-- 'single', '', '', '', message (false for a job with no record)
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = (#KEYS - 5) / 2
local ids = {}
for i = 1, n do ids[i] = ARGV[9 + i] end
-- whatever admission decides, these jobs' messages have reached a worker: the lost-message sweep lets go of them
redis.call('ZREM', KEYS[1], unpack(ids))

local fields = {'status', 'inflight', 'slot_at', 'conversation', 'attempts', 'created_at', 'next_attempt_at',
                'reason', 'message', 'recipient', 'kind'}
local out = {}
local function answer(a, b, c, d, e)
  out[#out + 1] = a
  out[#out + 1] = b
  out[#out + 1] = c
  out[#out + 1] = d
  out[#out + 1] = e
end
local acct = redis.call('HMGET', KEYS[4], 'health', 'paused_until', 'slowdown', 'slowdown_until')
local paused = tonumber(acct[2] or '')
if acct[1] == 'broken' or (paused and paused > now) then
  -- held or deferred: admit.lua says so for each job, with its reason
  for i = 1, n do answer('single', '', '', '', redis.call('HGET', KEYS[4 + 2 * i], 'message')) end
  return out
end
local factor = 1
if acct[3] and tonumber(acct[4] or '0') > now then factor = tonumber(acct[3]) end
local rate = tonumber(ARGV[2]) * factor
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[5]) or '0')
if tat < now then tat = now end
local booked = false
local inflight = {}
for i = 1, n do
  local job, lock = KEYS[4 + 2 * i], KEYS[5 + 2 * i]
  local job_id = ids[i]
  local rec = redis.call('HMGET', job, unpack(fields))
  local message = rec[9]
  local plain = rec[1] == 'queued' and (not rec[2] or rec[2] == '') and not rec[3] and not rec[4] and not rec[7]
                and message and not string.find(message, '"upload"', 1, true)
                and not string.find(message, '"tag"', 1, true)
                and not string.find(message, '"last_user_message_at"', 1, true)
                and not (rec[11] == 'product_template' and ARGV[5] ~= '1')
  if plain then
    local window, seconds
    if rec[11] == 'private_reply' then
      window, seconds = ARGV[7] .. ARGV[4] .. ':' .. string.sub(rec[10] or '', 9), ARGV[9]
    else
      window, seconds = ARGV[6] .. ARGV[4] .. ':' .. (rec[10] or ''), ARGV[8]
    end
    local opened = tonumber(redis.call('GET', window) or '')
    if opened and now >= opened + tonumber(seconds) then plain = false end  -- admit.lua dead-letters it
  end
  if not plain then
    answer('single', '', '', '', message or false)
  else
    -- book the next free slot (GCRA without burst: slots are exactly 1/rate apart)
    local slot = tat
    tat = tat + 1 / rate
    booked = true
    if slot > now + max_wait then
      redis.call('HSET', job, 'slot_at', string.format('%.6f', slot), 'next_attempt_at', string.format('%.6f', slot),
                 'updated_at', now)
      redis.call('ZADD', KEYS[3], string.format('%.6f', slot), job_id)
      answer('parked', string.format('%.6f', slot), '', '', '')
    else
      local attempt = tonumber(rec[5] or '0') + 1
      redis.call('HSET', job, 'status', 'sending', 'inflight', attempt, 'attempts', attempt, 'updated_at', now,
                 'inflight_at', now)
      if rec[8] then redis.call('HDEL', job, 'reason') end
      redis.call('SET', lock, '1', 'PX', ARGV[1])
      inflight[#inflight + 1] = now + tonumber(ARGV[1]) / 1000
      inflight[#inflight + 1] = job_id
      answer('go', string.format('%.6f', math.max(0, slot - now)), tostring(attempt), rec[6] or tostring(now),
             message)
    end
  end
end
if booked then
  redis.call('SET', KEYS[5], string.format('%.6f', tat), 'PX', math.ceil((tat - now) * 1000) + 60000)
end
if #inflight > 0 then redis.call('ZADD', KEYS[2], unpack(inflight)) end  -- until an outcome is recorded
return out

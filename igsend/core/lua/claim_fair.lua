-- The dispatcher's step (igsend.core.lanes): hands up to ARGV[1] job ids from the lanes to the moving list, one
-- at a time from the ready lane with the lowest score, so that every lane with work gets its turn; each id counts
-- as published from now on (pending), as claim_due's do.
-- A lane is one account's send class (account|class) with two lists, normal and bulk: bulk only when normal is
-- empty. Its budget (the rate hash, messages per second; none = no pacing) is kept with a GCRA clock (tat): a lane
-- that would run more than ARGV[4] seconds ahead of its budget leaves the ready set for the paced set, scored by
-- when it may go again, and costs nothing until then; its score is kept (vt) for when it returns, so pacing never
-- earns it a larger share.
-- The clock is the score last served (start-time fair queuing's virtual time): a lane that had no work, or comes
-- back from the paced set, rejoins there, so it neither jumps ahead of nor falls behind the lanes that kept theirs.
-- KEYS: ready, paced, tat, rate, vt, moving, pending, job key prefix, clock. ARGV: how many, wake at most, steps
-- at most, lead seconds.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ready, paced, tat_of, rate_of, vt = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lead = tonumber(ARGV[4])

local function lowest()
  local top = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
  return top[1], tonumber(top[2] or 0)
end

-- paced lanes whose time has come rejoin at the clock (or their own score, if higher)
local due = redis.call('ZRANGEBYSCORE', paced, '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then
  local floor = tonumber(redis.call('GET', KEYS[9]) or 0)
  for _, lane in ipairs(due) do
    redis.call('ZREM', paced, lane)
    redis.call('ZADD', ready, math.max(floor, tonumber(redis.call('HGET', vt, lane) or 0)), lane)
  end
end

local ids, steps = {}, 0
local wanted, most = tonumber(ARGV[1]), tonumber(ARGV[3])
while #ids < wanted and steps < most do
  steps = steps + 1
  local lane, score = lowest()
  if not lane then break end
  local rate = tonumber(redis.call('HGET', rate_of, lane) or 0)
  local tat = math.max(tonumber(redis.call('HGET', tat_of, lane) or 0), now)
  if rate > 0 and tat - now > math.max(lead, 1 / rate) then
    -- ahead of its budget: park it until it may go (nothing is read per waiting message)
    redis.call('ZREM', ready, lane)
    redis.call('HSET', vt, lane, score)
    redis.call('ZADD', paced, tat - math.max(lead, 1 / rate), lane)
  else
    local id = redis.call('LPOP', lane .. ':normal') or redis.call('LPOP', lane .. ':bulk')
    if not id then
      -- no work left: it rejoins at the clock when a message arrives (create_job.lua), its history forgotten,
      -- so an idle account's reply is served in the next round
      redis.call('ZREM', ready, lane)
      redis.call('HDEL', vt, lane)
    elseif redis.call('HGET', KEYS[8] .. id, 'status') == 'queued' then  -- not cancelled, not expired
      ids[#ids + 1] = id
      redis.call('RPUSH', KEYS[6], id)
      -- a microsecond apart, in the order they are published: the sweeper reads the queue's order from these
      redis.call('ZADD', KEYS[7], now + #ids / 1000000, id)
      if rate > 0 then redis.call('HSET', tat_of, lane, tat + 1 / rate) end
      redis.call('ZADD', ready, score + 1, lane)
      redis.call('SET', KEYS[9], score)
    end
  end
end
return ids

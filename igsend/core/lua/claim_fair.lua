-- The dispatcher's step (igsend.core.lanes): hands up to ARGV[1] job ids from the lanes to the moving list, a few at
-- a time (at most ARGV[5], one chunk) from the ready lane with the lowest score, so that every lane with work gets
-- its turn; each id counts as published from now on (pending), as claim_due's do.
-- A lane is one account's send class (account|class) with two lists, normal and bulk: bulk only when normal is
-- empty. Its budget (the rate hash, messages per second; none = no pacing) is kept with a GCRA clock (tat): a lane
-- takes no more than would keep it within ARGV[4] seconds ahead of its budget, and one that is further ahead leaves
-- the ready set for the paced set, scored by when it may go again, and costs nothing until then; its score is kept
-- (vt) for when it returns, so pacing never earns it a larger share. A lane's score grows by one per id taken.
-- The clock is the score last served (start-time fair queuing's virtual time): a lane that had no work, or comes
-- back from the paced set, rejoins there, so it neither jumps ahead of nor falls behind the lanes that kept theirs.
-- A cancelled job taken here is harmless: the worker's admission reads its status and skips it.
-- KEYS: ready, paced, tat, rate, vt, moving, pending, job key prefix, clock. ARGV: how many, wake at most, steps
-- at most, lead seconds, ids per step at most (less when several lanes are ready: their share of ARGV[1], but
-- at least ARGV[6]).
-- Returns, for each step that took ids: the lane, how many, then the ids (in the order they were taken).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ready, paced, tat_of, rate_of, vt = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lead = tonumber(ARGV[4])
local per_step = tonumber(ARGV[5] or 1)

-- paced lanes whose time has come rejoin at the clock (or their own score, if higher)
local due = redis.call('ZRANGEBYSCORE', paced, '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then
  local floor = tonumber(redis.call('GET', KEYS[9]) or 0)
  for _, lane in ipairs(due) do
    redis.call('ZREM', paced, lane)
    redis.call('ZADD', ready, math.max(floor, tonumber(redis.call('HGET', vt, lane) or 0)), lane)
  end
end

local out, taken, steps, served = {}, {}, 0, nil
local wanted, most = tonumber(ARGV[1]), tonumber(ARGV[3])
-- with several lanes ready, each takes its share of this call's room per turn, so that turns stay fine-grained,
-- but no fewer than ARGV[6] ids (a chunk of one or two would cost a Celery task each)
local sharing = redis.call('ZCARD', ready)
if sharing > 1 then
  per_step = math.max(math.min(per_step, tonumber(ARGV[6] or 1)), math.min(per_step, math.floor(wanted / sharing)))
end
while #taken < wanted and steps < most do
  steps = steps + 1
  local top = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
  local lane, score = top[1], tonumber(top[2] or 0)
  if not lane then break end
  local budget = redis.call('HMGET', rate_of, lane)[1]
  local rate = tonumber(budget or 0)
  local tat = now
  local room = math.min(per_step, wanted - #taken)
  if rate > 0 then
    tat = math.max(tonumber(redis.call('HGET', tat_of, lane) or 0), now)
    local ahead = math.max(lead, 1 / rate)
    room = math.min(room, math.floor((ahead - (tat - now)) * rate) + 1)
  end
  if room < 1 then
    -- ahead of its budget: park it until it may go (nothing is read per waiting message)
    redis.call('ZREM', ready, lane)
    redis.call('HSET', vt, lane, score)
    redis.call('ZADD', paced, tat - math.max(lead, 1 / rate), lane)
  else
    local ids = redis.call('LPOP', lane .. ':normal', room) or {}
    if #ids < room then
      local bulk = redis.call('LPOP', lane .. ':bulk', room - #ids) or {}
      for _, id in ipairs(bulk) do ids[#ids + 1] = id end
    end
    if #ids == 0 then
      -- no work left: it rejoins at the clock when a message arrives (create_job.lua), its history forgotten,
      -- so an idle account's reply is served in the next round
      redis.call('ZREM', ready, lane)
      redis.call('HDEL', vt, lane)
    else
      out[#out + 1] = lane
      out[#out + 1] = #ids
      for _, id in ipairs(ids) do
        out[#out + 1] = id
        taken[#taken + 1] = id
      end
      if rate > 0 then redis.call('HSET', tat_of, lane, tat + #ids / rate) end
      redis.call('ZADD', ready, score + #ids, lane)
      served = score
    end
  end
end
if #taken > 0 then
  redis.call('RPUSH', KEYS[6], unpack(taken))
  -- a microsecond apart, in the order they are published: the sweeper reads the queue's order from these
  local scored = {}
  for i, id in ipairs(taken) do
    scored[2 * i - 1] = now + i / 1000000
    scored[2 * i] = id
  end
  redis.call('ZADD', KEYS[7], unpack(scored))
  redis.call('SET', KEYS[9], served)
end
return out

-- Scheduled jobs that came due go to their account's lane (igsend.core.lanes), not to the Celery queue's due
-- list: a campaign scheduled for 9:00 then waits its turn with the other accounts, at its account's budget,
-- instead of going ahead of everyone's replies. At the lane's tail, in the order they came due (a later tick's
-- must not overtake an earlier one's), behind what the account queued before, by their priority. Only a job still 'scheduled' and not ordered moves (an ordered one is
-- released by its predecessor; a retry or a booked rate slot keeps the due list); the others stay in the moving
-- list for the scheduler to publish as before.
-- KEYS: moving, pending, ready, paced, clock, then for each job its record and its lane (the lane's key).
-- ARGV: each job's id. Returns the ids moved into lanes.
local moved = {}
local by_lane = {}
local order = {}
for i = 1, #ARGV do
  local job, lane = KEYS[4 + 2 * i], KEYS[5 + 2 * i]
  local rec = redis.call('HMGET', job, 'status', 'conversation', 'priority', 'slot_at')
  if rec[1] == 'scheduled' and not rec[2] and not rec[4] then
    redis.call('HSET', job, 'status', 'queued')
    redis.call('HDEL', job, 'next_attempt_at', 'reason')
    redis.call('LREM', KEYS[1], 1, ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
    local list = lane .. ':' .. (rec[3] or 'normal')
    if not by_lane[list] then
      by_lane[list] = {}
      order[#order + 1] = {list, lane}
    end
    table.insert(by_lane[list], ARGV[i])
    moved[#moved + 1] = ARGV[i]
  end
end
for _, pair in ipairs(order) do
  local list, lane = pair[1], pair[2]
  redis.call('RPUSH', list, unpack(by_lane[list]))
  -- a lane with no work joins the ready set at the dispatcher's clock (as lua/create_job.lua does)
  if not redis.call('ZSCORE', KEYS[3], lane) and not redis.call('ZSCORE', KEYS[4], lane) then
    redis.call('ZADD', KEYS[3], tonumber(redis.call('GET', KEYS[5]) or 0), lane)
  end
end
return moved

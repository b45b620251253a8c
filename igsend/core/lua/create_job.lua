-- Creates a job record, or answers with the job that already owns the idempotency key: one atomic step, so
-- two concurrent calls with the same key cannot both create a job. The key's value is "JOB_ID|FINGERPRINT": a
-- later call with the same key but another message is refused (as Stripe does).
-- KEYS: job, idempotency key (or the bare prefix 'igsend:idem:' for none: a key name that ACL key patterns
-- for igsend cover, unlike ''), pending, delayed (where a scheduled job, one with a next_attempt_at field,
-- waits for the scheduler instead of being published), its conversation and the conversation's counter (an
-- ordered job, one with a conversation field, takes the next place in it). ARGV: job id, record ttl, key window,
-- fingerprint, fields...
-- Optional KEYS 7-10: its account's lane (the lane's key; igsend.core.lanes), the ready set, the paced set and the
-- dispatcher's clock: with them a job that would be published now goes into the lane instead.
-- Returns {3, id} created into its lane (the dispatcher publishes it), {1, id} created (publish it now), {2, id} created to wait (scheduled, or behind an earlier job of its
-- ordered conversation: not published now), {0, id} the same message already has this job, {-1, id} the key
-- names another message.
if KEYS[2]:sub(-1) ~= ':' then
  local existing = redis.call('GET', KEYS[2])
  if existing then
    local owner, fingerprint = string.match(existing, '^(.-)|(%x+)$')
    if not owner then owner = existing end  -- claimed before fingerprints were stored: nothing to compare
    if owner == ARGV[1] then return {1, owner} end  -- this very call, replayed after a timeout
    if fingerprint and fingerprint ~= ARGV[4] then return {-1, owner} end
    return {0, owner}
  end
  redis.call('SET', KEYS[2], ARGV[1] .. '|' .. ARGV[4], 'EX', ARGV[3])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ARGV[2])
-- the record's fields are the ones just written: read them from ARGV rather than ask Redis again
local field = {}
for i = 5, #ARGV - 1, 2 do field[ARGV[i]] = ARGV[i + 1] end
if field['conversation'] then
  local place = redis.call('INCR', KEYS[6])
  redis.call('ZADD', KEYS[5], place, ARGV[1])
  for i = 5, 6 do  -- a quiet conversation leaves nothing behind: both keys live as long as its longest job
    if redis.call('TTL', KEYS[i]) < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[i], ARGV[2]) end
  end
  local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[1])
  local head = redis.call('ZRANGE', KEYS[5], 0, 0)[1]
  for _ = 1, 50 do  -- a head whose record is gone or that is done with holds no one (as in admit.lua)
    if head == ARGV[1] then break end
    local state = redis.call('HGET', prefix .. head, 'status')
    if state and state ~= 'delivered' and state ~= 'cancelled' and state ~= 'unknown' then break end
    redis.call('ZREM', KEYS[5], head)
    head = redis.call('ZRANGE', KEYS[5], 0, 0)[1]
  end
  if head ~= ARGV[1] then
    -- behind an earlier job: not published until that one is done with (lua/release.lua makes it due), so it
    -- costs no worker a wasted turn
    redis.call('HSET', KEYS[1], 'waiting_for', head, 'reason', 'waiting for job ' .. head .. ' (ordered conversation)')
    return {2, ARGV[1]}
  end
end
local due = field['next_attempt_at']
if due then
  redis.call('ZADD', KEYS[4], due, ARGV[1])
  return {2, ARGV[1]}
end
if KEYS[7] then
  -- into its account's lane (igsend.core.lanes), normal or bulk; the dispatcher hands it to the Celery queue at
  -- the account's budget and in turn with the other accounts. A lane that had no work joins the ready set at the
  -- dispatcher's clock (the score last served), so it is served in the next round, not after the backlogs' history
  -- nor ahead of a lane resting in the paced set.
  local lane = KEYS[7]
  -- a list that had work already belongs to a lane in the ready or the paced set: only a first one may need adding
  local length = redis.call('RPUSH', lane .. ':' .. (field['priority'] or 'normal'), ARGV[1])
  if length == 1 and not redis.call('ZSCORE', KEYS[8], lane) and not redis.call('ZSCORE', KEYS[9], lane) then
    redis.call('ZADD', KEYS[8], tonumber(redis.call('GET', KEYS[10]) or 0), lane)
  end
  return {3, ARGV[1]}
end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[3], tonumber(t[1]) + tonumber(t[2]) / 1000000, ARGV[1])  -- for the lost-message sweep
return {1, ARGV[1]}

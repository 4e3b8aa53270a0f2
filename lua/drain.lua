-- drain: stop an instance from claiming (it is shutting down) without dropping its lease.
-- KEYS[1]  tagged key prefix
-- ARGV[1]  instance id
-- Returns  {0}

redis.call('HSET', K.instance(ARGV[1]), 'draining', 1)
redis.call('ZREM', K.sleepers(), ARGV[1])
return {OK}

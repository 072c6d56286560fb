"""A Redis cache that keeps one client per connection pool.

Django's RedisCache builds a new redis.Redis client for every cache call, and building
one costs more than the round trip it makes; the pool (and so the connections) is shared
either way."""

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.commands.core import Script

# The values of KEYS[1..n], then, for each counter KEYS[n+i] living ARGV[i] seconds from
# its first count, its new count: one command and one reply. A pipeline of MGET, SET NX
# and INCR cost redis-py three commands' bookkeeping and parsing a request.
_READ_AND_COUNT = """
local n = #KEYS - #ARGV
local out = {}
if n > 0 then out = redis.call('MGET', unpack(KEYS, 1, n)) end
for i = 1, #ARGV do
  redis.call('SET', KEYS[n + i], 0, 'EX', ARGV[i], 'NX')
  out[n + i] = redis.call('INCR', KEYS[n + i])
end
return out
"""


class _ReusingClient(RedisCacheClient):
    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        clients = self.__dict__.setdefault("_clients", {})
        client = clients.get(id(pool))
        if client is None:
            client = clients[id(pool)] = self._client(connection_pool=pool)
        return client


class ReusingRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = _ReusingClient
        self._decoded: dict[str, tuple[bytes, object]] = {}  # key: (stored bytes, value)
        self._scripts: dict[int, Script] = {}  # per client: _READ_AND_COUNT, registered

    def validate_key(self, key):
        """No check: Django's warns about keys that memcached could not store, which Redis
        stores as they are, and it cost 1.5 % of a till's purchase (callgrind)."""

    def get_many_shared(self, keys, shared, counts=()) -> dict:
        """get_many, in one round trip, except that the values of the keys in `shared` are
        decoded once per process for as long as their stored bytes stay the same, and the
        same object goes to every caller: only for values nobody changes in place. A till's
        API key unpickles into four model instances on every request otherwise.
        `counts` are (key, timeout) counters to add one to in the same round trip, as
        `count` does; their new values come back under their keys."""
        names = {self.make_and_validate_key(key): key for key in keys}
        if counts:
            replies = self._read_and_count(list(names), counts)
            stored, counted = replies[: len(names)], replies[len(names) :]
        else:
            stored, counted = self._cache.get_client(None).mget(list(names)), []
        loads = self._cache._serializer.loads
        values = {key: value for (key, _t), value in zip(counts, counted, strict=True)}
        for made, data in zip(names, stored, strict=True):
            key = names[made]
            if data is None:
                continue
            if key not in shared:
                values[key] = loads(data)
                continue
            known = self._decoded.get(key)
            if known is None or known[0] != data:
                known = self._decoded[key] = (data, loads(data))
            values[key] = known[1]
        return values

    def count(self, key: str, timeout: int) -> int:
        """Add one to a counter that lives `timeout` seconds from its first count, and
        return it: one round trip (Django's incr is two, and needs the key to exist)."""
        return self._read_and_count([], [(key, timeout)])[0]

    def _read_and_count(self, made_keys: list[str], counts) -> list:
        """_READ_AND_COUNT's reply: the stored values of `made_keys` (already made into
        cache keys), then the new value of each (key, timeout) counter."""
        client = self._cache.get_client(None, write=True)
        script = self._scripts.get(id(client))
        if script is None:
            script = self._scripts[id(client)] = client.register_script(_READ_AND_COUNT)
        counters = [self.make_and_validate_key(key) for key, _timeout in counts]
        return script([*made_keys, *counters], [timeout for _key, timeout in counts], client)

"""``DeltaStore`` in Redis: one delta shared by every host (production).

Keys (all under ``key_prefix``, ``recsys:`` by default):

- ``events:<user_id>``  ZSET, member ``<product_id>:<ts>:<event_type>``, score ``ts``:
  the user's events in time order whatever order they arrive in; a retried delivery of
  the same event is the same member. Each write trims events older than
  ``user_ttl_seconds`` and all but the newest ``max_events_per_user``, and refreshes
  the key's EXPIRE, so a user's key goes ``user_ttl_seconds`` after their last event;
- ``trend:<hour>``  ZSET product_id -> count of events in that hour (``int(ts // 3600)``),
  EXPIRE ``trending_hours + 1`` hours; read by summing the window's keys with
  ZUNIONSTORE into a temporary key (``tmp:trending:<random>``, deleted in the same
  round trip, EXPIRE 10 s in case it is not);
- ``catalog``  HASH product_id -> ``<changed_at>|<1|0>|<category>`` (latest change);
  ``catalog:listed`` HASH product_id -> the category it is listed as new in;
  ``catalog:times`` ZSET product_id -> changed_at, to forget expired products;
- ``catalog:version``  STRING, a random token the catalog script sets whenever it
  changed ``catalog``: lookup workers cache the catalog changes and reload them when
  it moves (``catalog_view``). Random rather than a counter so that a Redis restarted
  empty (or a key evicted) cannot bring back a value a worker has cached;
- ``new:<category>``  ZSET product_id -> time it appeared in the category, EXPIRE
  ``catalog_ttl_seconds``, trimmed of entries older than that on each write;
- ``served:<request_id>``  STRING JSON ``[algorithm, segment, user_id, served_at]``,
  EXPIRE ``impression_ttl_seconds``; a reward takes it with GETDEL, so at most once;
- ``bandit``  HASH ``<segment>|<algorithm>|imp`` and ``...|rew`` -> counts
  (an algorithm name must not contain ``|``; a segment may);
- ``pinned``  STRING algorithm name.

Time decisions use the injected clock (stored times are compared with it, so expiry
is exact and tests need no sleeping); EXPIREs, in real seconds, only reclaim memory.
Catalog updates, new products and rewards run as Lua scripts: one round trip each,
and atomic where they read then write. The scripts build some key names from the
prefix, so this store needs a single Redis (not Redis Cluster).

Every method is one round trip (a script's first call after a Redis restart costs a
second one to load it) and raises ``DeltaUnavailable`` on any Redis or socket error,
after ``timeout_ms`` at most: no retry, the caller's circuit breaker decides.
"""
from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from lookup_server.delta import (
    CatalogChange, DeltaEvent, DeltaLimits, DeltaUnavailable, RecentEvent, Served, newest_listings,
)
from lookup_server.delta.catalog_view import CatalogView

# KEYS: catalog, catalog:listed, catalog:times, catalog:version. ARGV: new-list key
# prefix, cutoff (changes older than it are expired), EXPIRE seconds of new lists, the
# version token to set if anything changes, then per change: product id, changed_at,
# active (1/0), category ('' = unknown).
_APPLY_CATALOG = """
local catalog, listed, times = KEYS[1], KEYS[2], KEYS[3]
local cutoff = tonumber(ARGV[2])
local changed = false
for i = 5, #ARGV, 4 do
  local pid, t, active, cat = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local old_t, old_cat, old_listed = nil, '', false
  local old = redis.call('HGET', catalog, pid)
  if old then
    local ot, _, oc = string.match(old, '^([^|]*)|([^|]*)|(.*)$')
    if tonumber(ot) >= cutoff then  -- an expired record counts as unknown
      old_t, old_cat, old_listed = tonumber(ot), oc, redis.call('HGET', listed, pid)
    end
  end
  -- the latest change wins; a late, older one is ignored
  if tonumber(t) >= cutoff and (old_t == nil or tonumber(t) >= old_t) then
    if cat == '' then cat = old_cat end
    changed = true
    redis.call('HSET', catalog, pid, t .. '|' .. active .. '|' .. cat)
    redis.call('ZADD', times, t, pid)
    if active == '1' and cat ~= '' and old_listed ~= cat then
      redis.call('HSET', listed, pid, cat)
      local new_list = ARGV[1] .. cat
      redis.call('ZADD', new_list, t, pid)
      redis.call('ZREMRANGEBYSCORE', new_list, '-inf', '(' .. ARGV[2])
      redis.call('EXPIRE', new_list, ARGV[3])
    elseif old_t == nil then
      redis.call('HDEL', listed, pid)
    end
  end
end
-- forget a bounded batch of products whose latest change has expired
local stale = redis.call('ZRANGE', times, '-inf', '(' .. ARGV[2], 'BYSCORE', 'LIMIT', 0, 200)
for _, pid in ipairs(stale) do
  redis.call('HDEL', catalog, pid)
  redis.call('HDEL', listed, pid)
  redis.call('ZREM', times, pid)
end
if changed then redis.call('SET', KEYS[4], ARGV[4]) end
return 0
"""

# KEYS: catalog:version, catalog, catalog:listed. ARGV: new-list key prefix, most products.
# Returns {version, false} when the catalog holds more than that many products, else
# {version, changes, listed}: changes the catalog hash flat (product id, record), listed
# flat (category, its new list flat: product id, appeared_at) for every category a
# product is listed in (an active product is always listed in its category), each a
# JSON array: one string to parse, where a reply of thousands of elements costs
# redis-py's Python parser more than the script takes. No per-product work in Lua: the
# script blocks Redis while it runs. All of it read atomically (a script runs alone).
_CATALOG_VIEW = """
local version = redis.call('GET', KEYS[1])
if redis.call('HLEN', KEYS[2]) > tonumber(ARGV[2]) then return {version, false} end
local seen, listed = {}, {}
for _, cat in ipairs(redis.call('HVALS', KEYS[3])) do
  if not seen[cat] then
    seen[cat] = true
    table.insert(listed, cat)
    table.insert(listed, redis.call('ZRANGE', ARGV[1] .. cat, 0, -1, 'WITHSCORES'))
  end
end
return {version, cjson.encode(redis.call('HGETALL', KEYS[2])), cjson.encode(listed)}
"""

# KEYS: catalog. ARGV: new-list key prefix, lowest score (ZRANGE syntax), limit,
# cutoff, then the categories. Returns product id, category, appeared_at triples:
# per category, up to ``limit`` of its newest products still active in it.
_NEW_PRODUCTS = """
local limit, cutoff = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 5, #ARGV do
  local cat, found, offset = ARGV[i], 0, 0
  while found < limit do
    local page = redis.call('ZRANGE', ARGV[1] .. cat, '+inf', ARGV[2], 'BYSCORE', 'REV',
                            'LIMIT', offset, 100, 'WITHSCORES')
    if #page == 0 then break end
    for j = 1, #page, 2 do
      local cur = redis.call('HGET', KEYS[1], page[j])
      if cur and found < limit then
        local t, active, c = string.match(cur, '^([^|]*)|([^|]*)|(.*)$')
        if active == '1' and c == cat and tonumber(t) >= cutoff then
          table.insert(out, page[j]); table.insert(out, cat); table.insert(out, page[j + 1])
          found = found + 1
        end
      end
    end
    offset = offset + 100
  end
end
return out
"""

# KEYS: served record, bandit hash. ARGV: now, impression TTL, amount.
# Returns the record if it was there and not expired (and credits it), else nil.
_REWARD = """
local record = redis.call('GETDEL', KEYS[1])
if not record then return false end
local served = cjson.decode(record)
if tonumber(ARGV[1]) - served[4] > tonumber(ARGV[2]) then return false end
redis.call('HINCRBYFLOAT', KEYS[2], served[2] .. '|' .. served[1] .. '|rew', ARGV[3])
return record
"""

TEMP_KEY_SECONDS = 10


def _bucket(ts: float) -> int:
    return int(ts // 3600)


def _seconds(ttl: float) -> int:
    """An EXPIRE (whole seconds, > 0) no shorter than ``ttl``."""
    return max(1, math.ceil(ttl))


def _decode_catalog(product_id: int, value: str) -> CatalogChange:
    changed_at, active, category = value.split("|", 2)
    return CatalogChange(product_id, active == "1", category or None, float(changed_at))


class _NewListings:
    """``new:<category>`` lists as the catalog script returned them (flat: product id,
    appeared_at), parsed per category when first asked."""

    def __init__(self, raw: dict[str, list]):
        self._raw = raw
        self._parsed: dict[str, list[tuple[float, int]]] = {}

    def get(self, category: str, default=()) -> list[tuple[float, int]]:
        found = self._parsed.get(category)
        if found is None:
            flat = self._raw.get(category) or []  # an empty list came as {}
            found = self._parsed[category] = sorted(
                ((float(flat[i + 1]), int(flat[i])) for i in range(0, len(flat), 2)), reverse=True)
        return found or default


class RedisDeltaStore:
    """The delta in the Redis at ``url``; ``key_prefix`` separates environments sharing it."""

    def __init__(self, url: str, limits: DeltaLimits = DeltaLimits(), timeout_ms: int = 50,
                 key_prefix: str = "recsys:", clock: Callable[[], float] = time.time):
        self.limits = limits
        self._prefix = key_prefix
        self._clock = clock
        seconds = timeout_ms / 1000.0
        # One try per call (Retry with 0 retries): the caller's breaker handles outages.
        self._redis = redis.Redis.from_url(
            url, socket_timeout=seconds, socket_connect_timeout=seconds,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0,
            decode_responses=True)
        # For messages: where, without the URL's credentials.
        kwargs = self._redis.connection_pool.connection_kwargs
        self._where = (f"{kwargs['host']}:{kwargs.get('port', 6379)}" if "host" in kwargs
                       else kwargs.get("path", "(unix socket)"))
        self._apply_catalog = self._redis.register_script(_APPLY_CATALOG)
        self._new_products = self._redis.register_script(_NEW_PRODUCTS)
        self._reward = self._redis.register_script(_REWARD)
        self._catalog_view = self._redis.register_script(_CATALOG_VIEW)

    def _key(self, name: str) -> str:
        return self._prefix + name

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise DeltaUnavailable(f"redis {self._where}: {type(exc).__name__}: {exc}") from exc

    # --- written by the collector -------------------------------------------------

    def add_events(self, events: Sequence[DeltaEvent]) -> None:
        if not events:
            return
        limits = self.limits
        now = self._clock()
        cutoff = now - limits.user_ttl_seconds
        by_user: dict[int, dict[str, float]] = {}
        for e in events:
            if e.timestamp >= cutoff:
                by_user.setdefault(e.user_id, {})[f"{e.product_id}:{e.timestamp!r}:{e.event_type}"] = e.timestamp
        # As in LMDB: a future event counts in the current hour, one older than the window nowhere.
        now_bucket = _bucket(now)
        oldest_bucket = now_bucket - limits.trending_hours + 1
        counts = Counter((min(_bucket(e.timestamp), now_bucket), e.product_id) for e in events)
        pipe = self._redis.pipeline(transaction=False)
        for user_id, members in by_user.items():
            key = self._key(f"events:{user_id}")
            pipe.zadd(key, members)
            pipe.zremrangebyscore(key, "-inf", f"({cutoff!r}")
            pipe.zremrangebyrank(key, 0, -(limits.max_events_per_user + 1))
            pipe.expire(key, _seconds(limits.user_ttl_seconds))
        buckets = set()
        for (bucket, product_id), count in counts.items():
            if bucket >= oldest_bucket:
                pipe.zincrby(self._key(f"trend:{bucket}"), count, product_id)
                buckets.add(bucket)
        for bucket in buckets:
            pipe.expire(self._key(f"trend:{bucket}"), (limits.trending_hours + 1) * 3600)
        with self._errors():
            pipe.execute()

    def apply_catalog(self, changes: Sequence[CatalogChange]) -> None:
        if not changes:
            return
        ttl = self.limits.catalog_ttl_seconds
        args: list = [self._key("new:"), repr(self._clock() - ttl), _seconds(ttl), uuid.uuid4().hex]
        for change in changes:
            args += [change.product_id, repr(float(change.changed_at)), int(change.active),
                     change.category or ""]
        keys = [self._key("catalog"), self._key("catalog:listed"), self._key("catalog:times"),
                self._key("catalog:version")]
        with self._errors():
            self._apply_catalog(keys=keys, args=args)

    # --- read by the lookup server ------------------------------------------------

    def recent_events(self, user_id: int, since: float = 0.0) -> list[RecentEvent]:
        cutoff = self._clock() - self.limits.user_ttl_seconds
        with self._errors():
            rows = self._recent_rows(self._redis, user_id, since, cutoff)
        return self._recent(rows)

    def recent_events_and_catalog_version(self, user_id: int,
                                          since: float = 0.0) -> tuple[list[RecentEvent], str | None]:
        cutoff = self._clock() - self.limits.user_ttl_seconds
        pipe = self._redis.pipeline(transaction=False)  # one round trip
        self._recent_rows(pipe, user_id, since, cutoff)
        pipe.get(self._key("catalog:version"))
        with self._errors():
            rows, version = pipe.execute()
        return self._recent(rows), version

    def _recent_rows(self, client, user_id: int, since: float, cutoff: float):
        low = f"({since!r}" if since >= cutoff else repr(cutoff)  # newer than since, not expired
        return client.zrange(self._key(f"events:{user_id}"), "+inf", low, desc=True, byscore=True,
                             offset=0, num=self.limits.max_events_per_user, withscores=True)

    @staticmethod
    def _recent(rows) -> list[RecentEvent]:
        events = []
        for member, ts in rows:
            product_id, _, event_type = member.split(":", 2)
            events.append(RecentEvent(int(product_id), event_type, ts))
        return events

    def catalog_version(self) -> str | None:
        with self._errors():
            return self._redis.get(self._key("catalog:version"))

    def catalog_view(self, max_products: int) -> CatalogView:
        ttl = self.limits.catalog_ttl_seconds
        with self._errors():
            reply = self._catalog_view(
                keys=[self._key("catalog:version"), self._key("catalog"), self._key("catalog:listed")],
                args=[self._key("new:"), max_products])
        version = reply[0]
        if len(reply) < 3:  # {version, false}: too many
            return CatalogView.too_large(version, ttl)
        # An empty Lua table encodes as {}: "or []".
        flat, listed = json.loads(reply[1]) or [], json.loads(reply[2]) or []
        records = {int(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
        listings = _NewListings(dict(zip(listed[::2], listed[1::2])))
        return CatalogView(version, ttl, records, _decode_catalog, listings)

    def catalog_status(self, product_ids: Sequence[int]) -> dict[int, CatalogChange]:
        if not product_ids:
            return {}
        cutoff = self._clock() - self.limits.catalog_ttl_seconds
        with self._errors():
            values = self._redis.hmget(self._key("catalog"), list(product_ids))
        status = {}
        for product_id, value in zip(product_ids, values):
            if value is not None and (change := _decode_catalog(product_id, value)).changed_at >= cutoff:
                status[product_id] = change
        return status

    def new_products(self, categories: Sequence[str], since: float, limit: int) -> list[tuple[int, str]]:
        if limit <= 0 or not categories:
            return []
        cutoff = self._clock() - self.limits.catalog_ttl_seconds
        low = f"({since!r}" if since >= cutoff else repr(cutoff)
        args = [self._key("new:"), low, limit, repr(cutoff), *dict.fromkeys(categories)]
        with self._errors():
            flat = self._new_products(keys=[self._key("catalog")], args=args)
        return newest_listings([(float(flat[i + 2]), int(flat[i]), flat[i + 1]) for i in range(0, len(flat), 3)],
                               limit)

    def trending(self, hours: int, limit: int) -> list[tuple[int, float]]:
        hours = min(hours, self.limits.trending_hours)
        if hours <= 0 or limit <= 0:
            return []
        now_bucket = _bucket(self._clock())
        keys = [self._key(f"trend:{b}") for b in range(now_bucket - hours + 1, now_bucket + 1)]
        temp = self._key(f"tmp:trending:{uuid.uuid4().hex}")
        pipe = self._redis.pipeline(transaction=False)
        pipe.zunionstore(temp, keys)
        pipe.expire(temp, TEMP_KEY_SECONDS)
        pipe.zrange(temp, 0, limit - 1, desc=True, withscores=True)
        pipe.delete(temp)
        with self._errors():
            rows = pipe.execute()[2]
        return sorted(((int(member), score) for member, score in rows), key=lambda r: (-r[1], r[0]))

    # --- the bandit ---------------------------------------------------------------

    def record_served(self, request_id: str, served: Served) -> None:
        self.record_served_many([(request_id, served)])

    def record_served_many(self, impressions: Sequence[tuple[str, Served]]) -> None:
        if not impressions:
            return
        now, ttl = self._clock(), _seconds(self.limits.impression_ttl_seconds)
        pipe = self._redis.pipeline(transaction=False)
        counts: Counter[tuple[str, str]] = Counter()
        for request_id, served in impressions:
            pipe.set(self._key(f"served:{request_id}"),
                     json.dumps([served.algorithm, served.segment, served.user_id, now]), ex=ttl)
            counts[served.segment, served.algorithm] += 1
        for (segment, algorithm), shown in counts.items():
            pipe.hincrbyfloat(self._key("bandit"), f"{segment}|{algorithm}|imp", shown)
        with self._errors():
            pipe.execute()

    def reward(self, request_id: str, amount: float = 1.0) -> Served | None:
        args = [repr(self._clock()), repr(float(self.limits.impression_ttl_seconds)), repr(float(amount))]
        with self._errors():
            record = self._reward(keys=[self._key(f"served:{request_id}"), self._key("bandit")],
                                  args=args)
        if record is None:
            return None
        algorithm, segment, user_id, _ = json.loads(record)
        return Served(algorithm, segment, user_id)

    def bandit_counts(self) -> dict[tuple[str, str], tuple[float, float]]:
        with self._errors():
            fields = self._redis.hgetall(self._key("bandit"))
        counts: dict[tuple[str, str], list[float]] = {}
        for field, value in fields.items():
            rest, kind = field.rsplit("|", 1)
            segment, algorithm = rest.rsplit("|", 1)
            counts.setdefault((segment, algorithm), [0.0, 0.0])[kind == "rew"] = float(value)
        return {key: (imp, rew) for key, (imp, rew) in counts.items()}

    def set_pinned(self, algorithm: str | None) -> None:
        with self._errors():
            if algorithm is None:
                self._redis.delete(self._key("pinned"))
            else:
                self._redis.set(self._key("pinned"), algorithm)

    def pinned(self) -> str | None:
        with self._errors():
            return self._redis.get(self._key("pinned"))

    # --- operations ---------------------------------------------------------------

    def ping(self) -> None:
        with self._errors():
            self._redis.ping()

    def close(self) -> None:
        self._redis.close()

"""A ledger in Redis: one set of accounts for every process on every host that reaches it.

Check-and-hold is one Lua script, so it is atomic on the server: two workers on two hosts
can never both see room that only one of them may take (a read, a check in Python and a
separate write is how concurrent callers overshoot a cap).

Money is decimal text, and so are token and request counts. Lua has only doubles, exact to
2**53: a cost of $0.00000015 per token summed in doubles drifts, and a total of 10**19
tokens would round. So the scripts never turn an amount into a Lua number: they add,
subtract and compare non-negative decimal strings digit by digit (``_DECIMAL_LUA``), which
is exact at any size and any number of decimals, the same promise the in-memory and SQLite
ledgers keep with ``exact_arithmetic``. A fixed-point integer scale would have been simpler
but would either cap the precision of a price or the size of a total; decimal strings cap
neither, and the scripts only ever add and compare a handful of short strings.

Holds expire after ``reservation_ttl`` seconds, judged by the Redis server's clock
(``TIME``), one clock for every client however their own clocks drift. An expired hold is
reclaimed (set aside, "lapsed") by the next ``reserve`` or ``reserved`` on its account:
it no longer counts against the limit, but it is kept for a week so that settling it still
records the spend: a request that outlived its TTL was paid for all the same.

Durability is Redis's: run the server with ``appendonly yes`` (and ``appendfsync always``
if a spend acknowledged a moment before a power cut must survive it). Keys live under
``prefix``; the scripts touch keys they compute, so use one Redis server (or a primary
with replicas), not Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from crewline.budget.amount import Amount, Limit
from crewline.budget.ledger import LimitExceeded, checked_amount, new_reservation_id

if TYPE_CHECKING:
    import redis

__all__ = ["RedisLedger"]

# A lapsed hold is kept this long so a late settle can still record its spend.
_LAPSED_KEEP_SECONDS = 7 * 24 * 3600

_DECIMAL_LUA = r"""
local function split(s)
  local i, f = string.match(s, "^(%d*)%.?(%d*)$")
  if i == nil then error("crewline: not a decimal amount: " .. tostring(s)) end
  i = (string.gsub(i, "^0+", ""))
  f = (string.gsub(f, "0+$", ""))
  return i, f
end
local function align(a, b)
  local ai, af = split(a)
  local bi, bf = split(b)
  local fl = math.max(#af, #bf)
  af = af .. string.rep("0", fl - #af)
  bf = bf .. string.rep("0", fl - #bf)
  local il = math.max(#ai, #bi)
  ai = string.rep("0", il - #ai) .. ai
  bi = string.rep("0", il - #bi) .. bi
  return ai .. af, bi .. bf, fl
end
local function join(digits, fl)
  local i = string.sub(digits, 1, #digits - fl)
  local f = string.sub(digits, #digits - fl + 1)
  i = (string.gsub(i, "^0+", ""))
  f = (string.gsub(f, "0+$", ""))
  if i == "" then i = "0" end
  if f == "" then return i end
  return i .. "." .. f
end
local function cmp(a, b)
  local x, y = align(a, b)
  if x == y then return 0 end
  if x < y then return -1 end
  return 1
end
local function add(a, b)
  local x, y, fl = align(a, b)
  local out = {}
  local carry = 0
  for k = #x, 1, -1 do
    local d = string.byte(x, k) + string.byte(y, k) - 96 + carry
    if d >= 10 then d = d - 10; carry = 1 else carry = 0 end
    out[k + 1] = d
  end
  out[1] = carry
  return join(table.concat(out), fl)
end
local function sub(a, b)  -- a - b, never below zero
  if cmp(a, b) <= 0 then return "0" end
  local x, y, fl = align(a, b)
  local out = {}
  local borrow = 0
  for k = #x, 1, -1 do
    local d = string.byte(x, k) - string.byte(y, k) - borrow
    if d < 0 then d = d + 10; borrow = 1 else borrow = 0 end
    out[k] = d
  end
  return join(table.concat(out), fl)
end
local DIMS = {"cost", "tokens", "requests"}
local function get(key)
  local v = redis.call("HMGET", key, "cost", "tokens", "requests")
  return {v[1] or "0", v[2] or "0", v[3] or "0"}
end
local function put(key, v)
  if v[1] == "0" and v[2] == "0" and v[3] == "0" then
    redis.call("DEL", key)
  else
    redis.call("HSET", key, "cost", v[1], "tokens", v[2], "requests", v[3])
  end
end
local function now()
  local t = redis.call("TIME")
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- Lapse the holds of an account whose expiry passed: they stop counting, but are kept.
local function reclaim(prefix, account, at, keep)
  local holds = prefix .. ":holds:" .. account
  local expired = redis.call("ZRANGEBYSCORE", holds, "-inf", "(" .. at)
  if #expired == 0 then return end
  local rkey = prefix .. ":reserved:" .. account
  local reserved = get(rkey)
  for _, id in ipairs(expired) do
    local hkey = prefix .. ":hold:" .. id
    if redis.call("HGET", hkey, "lapsed") == "0" then
      local h = get(hkey)
      for d = 1, 3 do reserved[d] = sub(reserved[d], h[d]) end
      redis.call("HSET", hkey, "lapsed", "1")
      redis.call("EXPIRE", hkey, keep)
    end
    redis.call("ZREM", holds, id)
  end
  put(rkey, reserved)
end
"""

# ARGV: prefix, account, id, cost, tokens, requests, limit cost/tokens/requests ("" = no
# cap), ttl, keep. Returns {"ok"} or {"exceeded", dimension, left}.
_RESERVE_LUA = _DECIMAL_LUA + r"""
local prefix, account, id = ARGV[1], ARGV[2], ARGV[3]
local amount = {ARGV[4], ARGV[5], ARGV[6]}
local limit = {ARGV[7], ARGV[8], ARGV[9]}
local ttl, keep = tonumber(ARGV[10]), tonumber(ARGV[11])
local at = now()
reclaim(prefix, account, at, keep)
local rkey = prefix .. ":reserved:" .. account
local spent = get(prefix .. ":spent:" .. account)
local reserved = get(rkey)
for d = 1, 3 do
  if limit[d] ~= "" then
    local taken = add(spent[d], reserved[d])
    if cmp(add(taken, amount[d]), limit[d]) > 0 then
      return {"exceeded", DIMS[d], sub(limit[d], taken)}
    end
  end
end
local expires = at + ttl
local hkey = prefix .. ":hold:" .. id
redis.call("HSET", hkey, "account", account, "cost", amount[1], "tokens", amount[2],
           "requests", amount[3], "lapsed", "0")
redis.call("EXPIRE", hkey, math.ceil(ttl) + keep)
redis.call("ZADD", prefix .. ":holds:" .. account, string.format("%.6f", expires), id)
for d = 1, 3 do reserved[d] = add(reserved[d], amount[d]) end
put(rkey, reserved)
return {"ok"}
"""

# ARGV: prefix, id, spend ("1" settles, "0" releases), cost, tokens, requests.
_CLOSE_LUA = _DECIMAL_LUA + r"""
local prefix, id = ARGV[1], ARGV[2]
local hkey = prefix .. ":hold:" .. id
local account = redis.call("HGET", hkey, "account")
if not account then return 0 end
if redis.call("HGET", hkey, "lapsed") == "0" then
  local rkey = prefix .. ":reserved:" .. account
  local reserved = get(rkey)
  local h = get(hkey)
  for d = 1, 3 do reserved[d] = sub(reserved[d], h[d]) end
  put(rkey, reserved)
  redis.call("ZREM", prefix .. ":holds:" .. account, id)
end
redis.call("DEL", hkey)
if ARGV[3] == "1" then
  local skey = prefix .. ":spent:" .. account
  local spent = get(skey)
  local actual = {ARGV[4], ARGV[5], ARGV[6]}
  for d = 1, 3 do spent[d] = add(spent[d], actual[d]) end
  put(skey, spent)
end
return 1
"""

# ARGV: prefix, account, cost, tokens, requests.
_RECORD_LUA = _DECIMAL_LUA + r"""
local skey = ARGV[1] .. ":spent:" .. ARGV[2]
local spent = get(skey)
local amount = {ARGV[3], ARGV[4], ARGV[5]}
for d = 1, 3 do spent[d] = add(spent[d], amount[d]) end
put(skey, spent)
return 1
"""

# ARGV: prefix, account, keep. Reclaims expired holds, then returns the open ones' sum.
_RESERVED_LUA = _DECIMAL_LUA + r"""
reclaim(ARGV[1], ARGV[2], now(), tonumber(ARGV[3]))
return get(ARGV[1] .. ":reserved:" .. ARGV[2])
"""


def _text(value: Decimal | int) -> str:
    """Fixed-point text ("0.00000015", not "1.5E-7"), which the scripts read digit by digit."""
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def _limit_text(value: Decimal | int | None) -> str:
    return "" if value is None else _text(value)


def _amount(values: list[Any]) -> Amount:
    cost, tokens, requests = (v.decode() if isinstance(v, bytes) else str(v) for v in values)
    return Amount(Decimal(cost), int(tokens), int(requests))


def _without_password(url: str) -> str:
    """The URL as logs and reprs may show it: a password in it is masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _reopen(url: str, prefix: str, reservation_ttl: float) -> RedisLedger:
    return RedisLedger(url, prefix=prefix, reservation_ttl=reservation_ttl)


class RedisLedger:
    """A ``Ledger`` in a Redis server, for budgets shared by processes on many hosts.

    ``url`` is a redis-py URL (``redis://host:6379/0``, ``rediss://`` for TLS). Pickled, a
    ledger travels as its URL and options and connects again on the other side, so Ray
    workers count on the same accounts. The client's connection pool is safe to share
    between threads and is renewed in a forked child.

    A ``reserve`` whose reply is lost to a broken connection may have taken its hold; the
    hold then blocks its share of the limit until ``reservation_ttl`` lapses it, which errs
    toward spending less, never more.
    """

    shared_across_processes: ClassVar[bool] = True

    def __init__(self, url: str, *, prefix: str = "crewline",
                 reservation_ttl: float = 900.0) -> None:
        if reservation_ttl <= 0:
            raise ValueError(f"reservation_ttl must be > 0 seconds, got {reservation_ttl}")
        if not prefix:
            raise ValueError("prefix must be a non-empty str")
        try:
            import redis
        except ImportError:  # pragma: no cover - exercised without the extra installed
            raise ImportError("RedisLedger needs the redis client: "
                              "pip install 'crewline[redis]'") from None
        self.url = url
        self.prefix = prefix
        self.reservation_ttl = reservation_ttl
        self._client: redis.Redis = redis.Redis.from_url(url, decode_responses=True)
        self._reserve = self._client.register_script(_RESERVE_LUA)
        self._close = self._client.register_script(_CLOSE_LUA)
        self._record = self._client.register_script(_RECORD_LUA)
        self._reserved = self._client.register_script(_RESERVED_LUA)

    def reserve(self, account: str, amount: Amount, limit: Limit) -> str:
        checked_amount(amount)
        reservation_id = new_reservation_id()
        reply = self._reserve(args=[
            self.prefix, account, reservation_id, _text(amount.cost), _text(amount.tokens),
            _text(amount.requests), _limit_text(limit.cost), _limit_text(limit.tokens),
            _limit_text(limit.requests), repr(float(self.reservation_ttl)),
            _LAPSED_KEEP_SECONDS])
        if reply[0] == "ok":
            return reservation_id
        dimension, left_text = reply[1], reply[2]
        asked: Decimal | int
        left: Decimal | int
        cap: Decimal | int | None
        if dimension == "cost":
            asked, left, cap = amount.cost, Decimal(left_text), limit.cost
        else:
            asked, left, cap = getattr(amount, dimension), int(left_text), getattr(limit,
                                                                                  dimension)
        assert cap is not None  # the script only names capped dimensions
        raise LimitExceeded(account, dimension, asked=asked, left=left, limit=cap)

    def settle(self, reservation_id: str, actual: Amount) -> None:
        checked_amount(actual, "actual")
        self._close(args=[self.prefix, reservation_id, "1", _text(actual.cost),
                          _text(actual.tokens), _text(actual.requests)])

    def release(self, reservation_id: str) -> None:
        self._close(args=[self.prefix, reservation_id, "0", "0", "0", "0"])

    def record(self, account: str, amount: Amount) -> None:
        checked_amount(amount)
        self._record(args=[self.prefix, account, _text(amount.cost), _text(amount.tokens),
                           _text(amount.requests)])

    def spent(self, account: str) -> Amount:
        values = self._client.hmget(f"{self.prefix}:spent:{account}",
                                    ["cost", "tokens", "requests"])
        return _amount([v if v is not None else "0" for v in values])

    def reserved(self, account: str) -> Amount:
        """Open holds on ``account``, after lapsing expired ones, so the answer matches what
        the next ``reserve`` will count."""
        return _amount(self._reserved(args=[self.prefix, account, _LAPSED_KEEP_SECONDS]))

    def close(self) -> None:
        """Close the client's connections; the ledger reconnects if used again."""
        self._client.close()

    def __enter__(self) -> RedisLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RedisLedger({_without_password(self.url)!r}, prefix={self.prefix!r}, "
                f"reservation_ttl={self.reservation_ttl})")

    def __reduce__(self) -> tuple[Callable[..., RedisLedger], tuple[str, str, float]]:
        return _reopen, (self.url, self.prefix, self.reservation_ttl)

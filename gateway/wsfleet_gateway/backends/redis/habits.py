"""Each user's next-channel habits on Redis: the script and its arguments, kept pure.

A small, decayed first-order model: for every channel a user left, how often (lately)
they went to each other channel. Per user and "from" channel one sorted set,
``wsf:{u:<user>}:n:<from>`` (the user's hash tag: on a Redis Cluster all of one user's
keys sit in one slot, so one script reads and writes them); the channels a user opens
first after connecting are kept the same way in ``wsf:{u:<user>}:c``.

Decay without rewriting: a member's score is the base-2 log of its forward-decayed
count, ``log2(sum over its transitions of 2^(t_i / half_life))``. Adding a transition
at time ``t`` is ``s' = max(s, x) + log2(1 + 2^-(|s - x|))`` with ``x = t / half_life``,
one member touched; at any later time the members rank exactly as their decayed
counts ``2^(s - t/half_life)`` do, so reading the top is one ``ZREVRANGE``. Scores stay
small (days since the epoch), never overflow, and need no background job. A set keeps
its `MAX_NEXT` strongest members and expires `ttl` after its last write.

Bounded per user, whatever they do: an index ``wsf:{u:<user>}:f`` lists the channels
with a set, by when they were last left; past `MAX_FROM` the least recently left go,
with their sets. A user who joins a million channel names leaves at most
``MAX_FROM x MAX_NEXT`` members behind.

One ``EVALSHA`` per switch both learns (records ``from → to``) and predicts (returns
the top of ``to``'s set), and goes on the broker's command lane without the switch
waiting for it.
"""

from __future__ import annotations

from typing import Final

Arg = str | int
"""A command argument (``resp.Arg``; not imported: this module stays free of I/O)."""

MAX_NEXT: Final = 32
"""Members kept per set: a photographer's 8 to 15 channels, with room to spare."""
MAX_FROM: Final = 64
"""Sets kept per user (channels they left with a set of where they went next)."""

HABIT_LUA: Final = """
local x = tonumber(ARGV[2])
if ARGV[1] ~= '' then
  local s = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
  if s then
    local hi, lo = math.max(s, x), math.min(s, x)
    x = hi + math.log(1 + 2 ^ (lo - hi)) / math.log(2)
  end
  redis.call('ZADD', KEYS[1], string.format('%.17g', x), ARGV[1])
  local extra = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, extra - 1) end
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  if ARGV[6] ~= '' then
    redis.call('ZADD', KEYS[3], ARGV[2], ARGV[6])
    local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[7])
    if over > 0 then
      local old = redis.call('ZPOPMIN', KEYS[3], over)
      for i = 1, #old, 2 do redis.call('DEL', ARGV[8] .. old[i]) end
    end
    redis.call('PEXPIRE', KEYS[3], ARGV[4])
  end
end
local n = tonumber(ARGV[5])
if n <= 0 then return {} end
return redis.call('ZREVRANGE', KEYS[2], 0, n - 1)
"""
"""KEYS: the set to record in, the set to read, the user's index of sets. ARGV: the
channel to record (empty: record nothing), ``now / half_life``, the size cap, the TTL in
ms, how many to read, the channel left (empty: the connect set, not indexed), the most
sets per user, the prefix of a set's key (the script deletes the sets the index drops:
same user, same hash tag, same cluster slot)."""


def user_tag(user: str) -> str:
    return f"wsf:{{u:{user}}}"


def next_key(user: str, came_from: str) -> str:
    """Where `user`'s moves away from `came_from` are counted."""
    return f"{user_tag(user)}:n:{came_from}"


def index_key(user: str) -> str:
    """Which channels `user` has a `next_key` set for, by when they last left each."""
    return f"{user_tag(user)}:f"


def connect_key(user: str) -> str:
    """Where the channels `user` opens first on a connection are counted."""
    return f"{user_tag(user)}:c"


def step_args(
    user: str,
    came_from: str | None,
    to: str | None,
    now_s: float,
    half_life_s: float,
    ttl_ms: int,
    n: int,
) -> list[Arg]:
    """``EVALSHA`` arguments (after the sha) of one step of `user`'s model.

    - `to` given: record the move ``came_from → to`` (`came_from` None: `to` is the
      connection's first channel) and read the `n` likeliest channels after `to`;
    - `to` None (a connection just opened): record nothing, read the `n` likeliest
      first channels.

    A move to the channel it came from is not a move: nothing is recorded.
    """
    if half_life_s <= 0:
        raise ValueError("half_life_s must be positive")
    record_in = connect_key(user) if came_from is None else next_key(user, came_from)
    recorded = "" if to is None or to == came_from else to
    read = connect_key(user) if to is None else next_key(user, to)
    x = now_s / half_life_s
    indexed = "" if came_from is None or not recorded else came_from
    return [
        3, record_in, read, index_key(user),
        recorded, repr(x), MAX_NEXT, max(1, ttl_ms), max(0, n),
        indexed, MAX_FROM, next_key(user, ""),
    ]  # fmt: skip

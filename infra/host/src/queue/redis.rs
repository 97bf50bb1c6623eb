//! The durable queue on Redis, for several hosts that publish and claim concurrently.
//!
//! # Layout
//!
//! Everything lives under `bss:q:`. Per message:
//!
//! - `m:<id>`: a hash `{subject, body, okey?, pub, seq, refs}`; `pub` is the publish time (ms),
//!   `seq` a global publish order number (from `seq`), `refs` the deliveries not yet acknowledged.
//!   When `refs` reaches 0 the body is dropped and the rest is kept for [`DEDUPE_WINDOW`] as a
//!   tombstone, so a publish of the same id within that window is still recognised as a repeat.
//!
//! Per consumer `c` (a delivery is the pair `(c, id)`; fields and members are message ids):
//!
//! - `pend:<c>`: sorted set of every pending delivery (due, leased or waiting behind its
//!   ordering key), scored by `seq`: depth and the admin list read it.
//! - `due:<c>`: sorted set of the deliveries that may be handed out, scored by the time (ms)
//!   they may be: due time when waiting, lease expiry when leased. Claiming takes members with
//!   `score <= now` and re-scores them to `now + lease`, so a leased delivery is invisible until its
//!   lease runs out, and then it is simply due again: a crashed host's work resumes by itself.
//! - `att:<c>` (claims since publish or replay), `lease:<c>` (the attempt number holding the
//!   current lease: a fencing token), `err:<c>` (last error): hashes keyed by message id.
//! - `dead:<c>`: sorted set of dead letters, scored by `seq`.
//! - `ok:<len(c)>:<c>:<ordering key>`: list of the ids of one ordering key in publish order. Only
//!   its head is in `due:<c>`; the others wait in the list. Acknowledging or dead-lettering the head
//!   pops it and puts the next one in `due:<c>`, so per (consumer, ordering key) exactly one
//!   message is ever claimable or leased, the oldest unfinished one. A retried head stays the head.
//!   A replayed dead letter rejoins its key at the back of the list (later messages already went
//!   past it), so there is still never more than one in flight per key.
//! - `consumers`: the set of consumer names, for depth and the admin list.
//!
//! Every operation that touches more than one key is one Lua script, so it is atomic however
//! many hosts run it at once; claims race only inside Redis, which runs one script at a time. The
//! scripts read the clock with `TIME`, so leases are judged by the Redis clock, not by hosts whose
//! clocks may disagree (`retry_at_ms` comes from the host that failed the delivery).
//!
//! `complete` is fenced: it applies only when the delivery is still leased by the attempt the
//! caller was handed (`Delivery::attempt`). A host whose lease ran out and whose delivery was
//! claimed again by another host changes nothing by completing late, and a second `complete` of
//! the same delivery is a no-op.
//!
//! # Why not a stream consumer group
//!
//! Redis Streams (`XADD`/`XREADGROUP`/`XACK`/`XAUTOCLAIM`) give fan-out and lease-like pending
//! entries, but not what this queue promises: a failed delivery must come back at a time of its
//! own choosing (per-message backoff) while others flow past it, but a pending entry can only be
//! re-claimed after an idle time that is the same for the whole group; an ordering key must hold
//! back later entries while an earlier one is leased or waiting for its retry, but a group hands
//! out entries strictly in stream order, whichever key they carry; and a dead letter has to leave
//! the pending list, stop blocking its key and be replayable, which needs a move between
//! structures in the same atomic step. Each of those is a read-decide-write over several keys,
//! which is what the scripts here do; a stream would add a second source of truth beside them.
//!
//! # Operating it
//!
//! One Redis (with replicas or Sentinel), not Redis Cluster: the scripts derive key names from
//! message ids and ordering keys. For the queue to be durable the server must persist (AOF with
//! `appendfsync everysec` or stricter) and must not evict (`maxmemory-policy noeviction`).

use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{RedisError, Script};

use super::{Delivery, DeliveryInfo, DeliveryState, Depth, NewMessage, Outcome, QueueError, QueueResult};

/// How long a fully acknowledged message id is remembered, so a repeated publish stays a no-op.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

const PREFIX: &str = "bss:q:";

/// Helpers shared by the scripts. `ARGV[1]` is always the key prefix.
const PRELUDE: &str = r"
local P = ARGV[1]
local function s(n) return string.format('%d', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function k(kind, c) return P .. kind .. ':' .. c end
local function k_msg(id) return P .. 'm:' .. id end
local function k_ord(c, okey) return P .. 'ok:' .. s(#c) .. ':' .. c .. ':' .. okey end
-- Make delivery (c, id) claimable now, unless an earlier message of its ordering key is ahead.
local function enqueue(c, id, okey, now)
  if okey then
    if redis.call('RPUSH', k_ord(c, okey), id) > 1 then return end
  end
  redis.call('ZADD', k('due', c), s(now), id)
end
-- Take finished delivery (c, id) out of its ordering key and let the next message of the key go.
local function release(c, id, okey, now)
  if not okey then return end
  local key = k_ord(c, okey)
  redis.call('LREM', key, 1, id)
  local next_id = redis.call('LINDEX', key, 0)
  if next_id then redis.call('ZADD', k('due', c), 'NX', s(now), next_id) end
end
";

/// `ARGV`: prefix, id, subject, body, ordering key, has ordering key ('1'/'0'), tombstone ttl (s),
/// consumers... Answers 1 if stored, 0 if the id was known.
const PUBLISH: &str = r"
local id = ARGV[2]
local mk = k_msg(id)
if redis.call('EXISTS', mk) == 1 then return 0 end
local now = now_ms()
local seq = redis.call('INCR', P .. 'seq')
local okey = false
if ARGV[6] == '1' then okey = ARGV[5] end
local consumers = #ARGV - 7
redis.call('HSET', mk, 'subject', ARGV[3], 'body', ARGV[4], 'pub', s(now), 'seq', s(seq), 'refs', s(consumers))
if okey then redis.call('HSET', mk, 'okey', okey) end
for i = 8, #ARGV do
  local c = ARGV[i]
  redis.call('SADD', P .. 'consumers', c)
  redis.call('ZADD', k('pend', c), s(seq), id)
  enqueue(c, id, okey, now)
end
if consumers == 0 then
  redis.call('HDEL', mk, 'body')
  redis.call('EXPIRE', mk, ARGV[7])
end
return 1
";

/// `ARGV`: prefix, consumer, limit, lease (ms). Answers `{id, subject, body, okey|nil, pub, attempt}...`.
const CLAIM: &str = r"
local c = ARGV[2]
local now = now_ms()
local due = k('due', c)
local ids = redis.call('ZRANGEBYSCORE', due, '-inf', s(now), 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local m = redis.call('HMGET', k_msg(id), 'subject', 'body', 'okey', 'pub')
  if not m[1] or not m[2] then
    -- The message is gone (deleted by hand or evicted): drop the orphaned delivery.
    redis.call('ZREM', due, id)
    redis.call('ZREM', k('pend', c), id)
    redis.call('HDEL', k('att', c), id)
    redis.call('HDEL', k('lease', c), id)
    redis.call('HDEL', k('err', c), id)
  else
    local attempt = redis.call('HINCRBY', k('att', c), id, 1)
    redis.call('HSET', k('lease', c), id, s(attempt))
    redis.call('ZADD', due, s(now + tonumber(ARGV[4])), id)
    out[#out + 1] = {id, m[1], m[2], m[3], m[4], attempt}
  end
end
return out
";

/// `ARGV`: prefix, consumer, id, attempt, 'ack'|'retry'|'dead', error, retry at (ms), tombstone ttl.
/// Answers 1 if applied, 0 if the delivery is not leased by that attempt (stale or repeated).
const COMPLETE: &str = r"
local c, id = ARGV[2], ARGV[3]
local lease = k('lease', c)
if redis.call('HGET', lease, id) ~= ARGV[4] then return 0 end
redis.call('HDEL', lease, id)
local kind = ARGV[5]
if kind == 'retry' then
  redis.call('HSET', k('err', c), id, ARGV[6])
  redis.call('ZADD', k('due', c), ARGV[7], id)
  return 1
end
local mk = k_msg(id)
local okey = redis.call('HGET', mk, 'okey')
local seq = redis.call('ZSCORE', k('pend', c), id) or redis.call('HGET', mk, 'seq') or '0'
redis.call('ZREM', k('due', c), id)
redis.call('ZREM', k('pend', c), id)
release(c, id, okey, now_ms())
if kind == 'dead' then
  redis.call('HSET', k('err', c), id, ARGV[6])
  redis.call('ZADD', k('dead', c), seq, id)
  return 1
end
redis.call('HDEL', k('att', c), id)
redis.call('HDEL', k('err', c), id)
if redis.call('EXISTS', mk) == 1 and redis.call('HINCRBY', mk, 'refs', -1) <= 0 then
  redis.call('HDEL', mk, 'body')
  redis.call('EXPIRE', mk, ARGV[8])
end
return 1
";

/// `ARGV`: prefix, consumer, id. Answers 1 if the dead letter was put back, 0 if there is none.
const REPLAY: &str = r"
local c, id = ARGV[2], ARGV[3]
local seq = redis.call('ZSCORE', k('dead', c), id)
if not seq then return 0 end
redis.call('ZREM', k('dead', c), id)
redis.call('HDEL', k('att', c), id)
redis.call('HDEL', k('lease', c), id)
redis.call('ZADD', k('pend', c), seq, id)
enqueue(c, id, redis.call('HGET', k_msg(id), 'okey'), now_ms())
return 1
";

/// `ARGV`: prefix. Answers `{pending, dead}`.
const DEPTH: &str = r"
local pending, dead = 0, 0
for _, c in ipairs(redis.call('SMEMBERS', P .. 'consumers')) do
  pending = pending + redis.call('ZCARD', k('pend', c))
  dead = dead + redis.call('ZCARD', k('dead', c))
end
return {pending, dead}
";

/// `ARGV`: prefix, 'pend'|'dead', limit. Answers the oldest deliveries (by publish order) over all
/// consumers: `{consumer, id, subject, body, okey|nil, pub, failed attempts, next attempt (ms), error|nil}...`.
const LIST: &str = r"
local set, limit = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local found = {}
for _, c in ipairs(redis.call('SMEMBERS', P .. 'consumers')) do
  local r = redis.call('ZRANGE', k(set, c), 0, limit - 1, 'WITHSCORES')
  for i = 1, #r, 2 do found[#found + 1] = {c, r[i], tonumber(r[i + 1])} end
end
table.sort(found, function(a, b)
  if a[3] ~= b[3] then return a[3] < b[3] end
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end)
local out = {}
for i = 1, math.min(limit, #found) do
  local c, id = found[i][1], found[i][2]
  local m = redis.call('HMGET', k_msg(id), 'subject', 'body', 'okey', 'pub')
  local attempts = tonumber(redis.call('HGET', k('att', c), id) or '0')
  local next_at = 0
  if set == 'pend' then
    local score = redis.call('ZSCORE', k('due', c), id)
    if score then
      next_at = tonumber(score)
      -- A delivery leased right now is not a failed attempt (yet).
      if next_at > now and attempts > 0 and redis.call('HEXISTS', k('lease', c), id) == 1 then
        attempts = attempts - 1
      end
    else
      next_at = tonumber(m[4] or '0')
    end
  end
  out[#out + 1] = {c, id, m[1] or '', m[2] or '', m[3], m[4] or '0', attempts, s(next_at), redis.call('HGET', k('err', c), id)}
end
return out
";

fn backend(e: RedisError) -> QueueError {
    QueueError::Backend(e.to_string())
}

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

type ClaimRow = (String, String, Vec<u8>, Option<String>, u64, u32);
type ListRow = (String, String, String, Vec<u8>, Option<String>, u64, u32, u64, Option<String>);

/// The queue on a Redis shared by several hosts.
pub struct RedisQueue {
    conn: ConnectionManager,
    publish: Script,
    claim: Script,
    complete: Script,
    replay: Script,
    depth: Script,
    list: Script,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue").field("prefix", &PREFIX).finish_non_exhaustive()
    }
}

impl RedisQueue {
    /// Connect to the Redis at `url`; fails fast, naming the URL, when it is unreachable.
    pub async fn connect(url: &str) -> anyhow::Result<RedisQueue> {
        let conn = crate::kv::redis::connect_manager(url).await?;
        Ok(RedisQueue {
            conn,
            publish: script(PUBLISH),
            claim: script(CLAIM),
            complete: script(COMPLETE),
            replay: script(REPLAY),
            depth: script(DEPTH),
            list: script(LIST),
        })
    }

    pub async fn publish(&self, msg: &NewMessage, consumers: &[String]) -> QueueResult<bool> {
        let mut distinct: Vec<&String> = Vec::with_capacity(consumers.len());
        for c in consumers {
            if !distinct.contains(&c) {
                distinct.push(c);
            }
        }
        let mut invocation = self.publish.prepare_invoke();
        invocation
            .arg(PREFIX)
            .arg(&msg.id)
            .arg(&msg.subject)
            .arg(&msg.body)
            .arg(msg.ordering_key.as_deref().unwrap_or(""))
            .arg(if msg.ordering_key.is_some() { "1" } else { "0" })
            .arg(DEDUPE_WINDOW.as_secs());
        for c in distinct {
            invocation.arg(c);
        }
        let stored: i64 = invocation.invoke_async(&mut self.conn.clone()).await.map_err(backend)?;
        Ok(stored == 1)
    }

    pub async fn claim(&self, consumer: &str, limit: usize, lease: Duration) -> QueueResult<Vec<Delivery>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).min(i64::MAX as u64 / 4);
        let mut invocation = self.claim.prepare_invoke();
        invocation.arg(PREFIX).arg(consumer).arg(limit).arg(lease_ms);
        let rows: Vec<ClaimRow> = invocation.invoke_async(&mut self.conn.clone()).await.map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(message_id, subject, body, ordering_key, published_at_ms, attempt)| Delivery {
                consumer: consumer.to_owned(),
                message_id,
                subject,
                body,
                ordering_key,
                attempt,
                published_at_ms,
            })
            .collect())
    }

    pub async fn complete(&self, delivery: &Delivery, outcome: &Outcome) -> QueueResult<()> {
        let (kind, error, retry_at_ms) = match outcome {
            Outcome::Ack => ("ack", "", 0),
            Outcome::Failed { error, retry_at_ms: Some(at) } => ("retry", error.as_str(), *at),
            Outcome::Failed { error, retry_at_ms: None } => ("dead", error.as_str(), 0),
        };
        let mut invocation = self.complete.prepare_invoke();
        invocation
            .arg(PREFIX)
            .arg(&delivery.consumer)
            .arg(&delivery.message_id)
            .arg(delivery.attempt)
            .arg(kind)
            .arg(error)
            .arg(retry_at_ms)
            .arg(DEDUPE_WINDOW.as_secs());
        let applied: i64 = invocation.invoke_async(&mut self.conn.clone()).await.map_err(backend)?;
        if applied == 0 {
            tracing::debug!(
                consumer = %delivery.consumer,
                message_id = %delivery.message_id,
                attempt = delivery.attempt,
                "ignored the completion of a delivery no longer leased by this attempt"
            );
        }
        Ok(())
    }

    pub async fn list(&self, state: DeliveryState, limit: usize) -> QueueResult<Vec<DeliveryInfo>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let set = match state {
            DeliveryState::Pending => "pend",
            DeliveryState::Dead => "dead",
        };
        let mut invocation = self.list.prepare_invoke();
        invocation.arg(PREFIX).arg(set).arg(limit);
        let rows: Vec<ListRow> = invocation.invoke_async(&mut self.conn.clone()).await.map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    consumer,
                    message_id,
                    subject,
                    body,
                    ordering_key,
                    published_at_ms,
                    attempts,
                    next_at,
                    last_error,
                )| {
                    DeliveryInfo {
                        consumer,
                        message_id,
                        subject,
                        ordering_key,
                        state,
                        attempts,
                        published_at_ms,
                        next_attempt_at_ms: next_at,
                        last_error,
                        body: String::from_utf8(body).ok(),
                    }
                },
            )
            .collect())
    }

    pub async fn replay(&self, consumer: &str, message_id: &str) -> QueueResult<()> {
        let mut invocation = self.replay.prepare_invoke();
        invocation.arg(PREFIX).arg(consumer).arg(message_id);
        let replayed: i64 = invocation.invoke_async(&mut self.conn.clone()).await.map_err(backend)?;
        if replayed == 1 {
            Ok(())
        } else {
            Err(QueueError::NotFound(format!("no dead letter {message_id:?} for consumer {consumer:?}")))
        }
    }

    pub async fn depth(&self) -> QueueResult<Depth> {
        let mut invocation = self.depth.prepare_invoke();
        invocation.arg(PREFIX);
        let (pending, dead): (u64, u64) = invocation.invoke_async(&mut self.conn.clone()).await.map_err(backend)?;
        Ok(Depth { pending, dead })
    }

    pub async fn next_due_ms(&self, consumer: &str) -> QueueResult<Option<u64>> {
        let first: Vec<(String, f64)> = ::redis::cmd("ZRANGE")
            .arg(format!("{PREFIX}due:{consumer}"))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(first.first().map(|(_, score)| score.max(0.0) as u64))
    }
}

//! The key-value store on Redis, for several hosts sharing one store.
//!
//! Layout, per store label `L` (labels may not contain `:`, so two labels never share a key):
//!
//! - `bss:kv:L:<key>`: a hash `{v: <value bytes>, n: <version>}`.
//! - `bss:kvseq:L`: the store's version counter. Every write (set, swap, increment, set_many)
//!   takes the next number from it, so a key's version only ever grows, and a key that is deleted
//!   and written again gets a version it never had before: a swap against the version read before
//!   the delete fails (no ABA).
//! - `bss:kvidx:L`: a sorted set of every present key, all with score 0, so `ZRANGEBYLEX` walks
//!   them in byte order (SCAN is unordered and cannot page by cursor).
//!
//! Every write is one Lua script that touches the value, the version and the index together, so
//! the index never drifts and compare-and-swap is exact: the version comparison and the write
//! happen in one atomic step on the server, whichever host sends them.
//!
//! The scripts build no key names of their own (all come in `KEYS`), but the store is meant for a
//! single Redis (with replicas or Sentinel), not Redis Cluster: a batch spans many hash slots.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncConnectionConfig, Client, RedisError, Script};
use anyhow::Context as _;

use super::{KeyPage, KvError, KvResult, Versioned};

/// How long connecting may take before the host gives up with an error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one command may wait for its answer (a hung server fails requests, not the host).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);

/// Connect to Redis, failing fast (with the URL, password hidden, in the error) when the server
/// is unreachable. The returned manager reconnects by itself after a lost connection.
pub(crate) async fn connect_manager(url: &str) -> anyhow::Result<ConnectionManager> {
    let shown = redact_url(url);
    let client = Client::open(url).with_context(|| format!("invalid Redis URL {shown}"))?;
    // One probe without retries: the manager below would retry a refused connection for seconds.
    let probe_config =
        AsyncConnectionConfig::new().set_connection_timeout(CONNECT_TIMEOUT).set_response_timeout(CONNECT_TIMEOUT);
    let mut probe = client
        .get_multiplexed_async_connection_with_config(&probe_config)
        .await
        .with_context(|| format!("cannot connect to Redis at {shown}"))?;
    ::redis::cmd("PING")
        .query_async::<()>(&mut probe)
        .await
        .with_context(|| format!("Redis at {shown} does not answer PING"))?;
    drop(probe);
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
        .set_number_of_retries(5)
        .set_max_delay(2_000);
    ConnectionManager::new_with_config(client, config)
        .await
        .with_context(|| format!("cannot connect to Redis at {shown}"))
}

/// The URL with any password replaced, fit for logs and error messages.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { "***".to_owned() };
            format!("{}{masked}{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn backend(e: RedisError) -> KvError {
    KvError::Backend(e.to_string())
}

/// Write entries: `KEYS[1]` index, `KEYS[2]` version counter, `KEYS[2+i]` the hash of entry `i`;
/// `ARGV[2i-1]` its key (for the index), `ARGV[2i]` its value.
const SET_MANY: &str = r"
for i = 3, #KEYS do
  local n = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[i], 'v', ARGV[2 * (i - 2)], 'n', string.format('%d', n))
  redis.call('ZADD', KEYS[1], 0, ARGV[2 * (i - 2) - 1])
end
return #KEYS - 2
";

/// Delete keys: `KEYS[1]` index, `KEYS[1+i]` the hash of key `i`, `ARGV[i]` key `i`.
const DELETE_MANY: &str = r"
for i = 2, #KEYS do
  redis.call('DEL', KEYS[i])
  redis.call('ZREM', KEYS[1], ARGV[i - 1])
end
return #KEYS - 1
";

/// Compare-and-swap: `KEYS` index, counter, hash; `ARGV` key, expected version, value.
/// Writes only if the stored version (0 when absent) is the expected one; returns 1 if it wrote.
const SWAP: &str = r"
local current = redis.call('HGET', KEYS[3], 'n') or '0'
if current ~= ARGV[2] then return 0 end
local n = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[3], 'v', ARGV[3], 'n', string.format('%d', n))
redis.call('ZADD', KEYS[1], 0, ARGV[1])
return 1
";

/// Add to a decimal counter: `KEYS` index, counter, hash; `ARGV` key, delta.
/// Accepts what `parse_counter` accepts (surrounding spaces, a sign, leading zeros), adds with
/// HINCRBY (exact 64-bit arithmetic, refuses overflow; Lua numbers are doubles) and answers
/// `{'ok', <new value>}`, `{'nan', ''}` or `{'overflow', ''}`, changing nothing in the last two.
const INCREMENT: &str = r"
local current = redis.call('HGET', KEYS[3], 'v')
if current then
  local sign, digits = string.match(current, '^%s*([+-]?)(%d+)%s*$')
  if not digits then return {'nan', ''} end
  digits = (string.gsub(digits, '^0+', ''))
  local canonical
  if digits == '' then canonical = '0' elseif sign == '-' then canonical = '-' .. digits else canonical = digits end
  if canonical ~= current then redis.call('HSET', KEYS[3], 'v', canonical) end
  local r = redis.pcall('HINCRBY', KEYS[3], 'v', ARGV[2])
  if type(r) == 'table' and r.err then
    if canonical ~= current then redis.call('HSET', KEYS[3], 'v', current) end
    if string.find(r.err, 'overflow', 1, true) then return {'overflow', ''} end
    return {'nan', ''}
  end
else
  redis.call('HSET', KEYS[3], 'v', ARGV[2])
end
local n = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[3], 'n', string.format('%d', n))
redis.call('ZADD', KEYS[1], 0, ARGV[1])
return {'ok', redis.call('HGET', KEYS[3], 'v')}
";

/// One store label on a Redis shared by several hosts.
pub struct RedisKv {
    conn: ConnectionManager,
    /// `bss:kv:<label>:`, prepended to every key.
    prefix: String,
    index: String,
    counter: String,
    set_many: Script,
    delete_many: Script,
    swap: Script,
    increment: Script,
}

impl std::fmt::Debug for RedisKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKv").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisKv {
    /// Connect to the Redis at `url` and open the store `label` on it.
    pub async fn connect(url: &str, label: &str) -> anyhow::Result<RedisKv> {
        if label.is_empty() || label.contains(':') {
            anyhow::bail!("key-value store label {label:?} must be non-empty and contain no ':'");
        }
        let conn = connect_manager(url).await?;
        Ok(RedisKv {
            conn,
            prefix: format!("bss:kv:{label}:"),
            index: format!("bss:kvidx:{label}"),
            counter: format!("bss:kvseq:{label}"),
            set_many: Script::new(SET_MANY),
            delete_many: Script::new(DELETE_MANY),
            swap: Script::new(SWAP),
            increment: Script::new(INCREMENT),
        })
    }

    fn data_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub async fn get(&self, key: &str) -> KvResult<Option<Vec<u8>>> {
        ::redis::cmd("HGET").arg(self.data_key(key)).arg("v").query_async(&mut self.conn.clone()).await.map_err(backend)
    }

    pub async fn get_versioned(&self, key: &str) -> KvResult<Versioned> {
        let (value, version): (Option<Vec<u8>>, Option<u64>) = ::redis::cmd("HMGET")
            .arg(self.data_key(key))
            .arg("v")
            .arg("n")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(match (value, version) {
            (Some(value), Some(version)) if version > 0 => Versioned { value: Some(value), version },
            _ => Versioned { value: None, version: 0 },
        })
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> KvResult<()> {
        let mut invocation = self.set_many.prepare_invoke();
        invocation.key(&self.index).key(&self.counter).key(self.data_key(key)).arg(key).arg(value);
        invocation.invoke_async::<()>(&mut self.conn.clone()).await.map_err(backend)
    }

    pub async fn delete(&self, key: &str) -> KvResult<()> {
        self.delete_many(std::slice::from_ref(&key.to_owned())).await
    }

    pub async fn exists(&self, key: &str) -> KvResult<bool> {
        ::redis::cmd("EXISTS").arg(self.data_key(key)).query_async(&mut self.conn.clone()).await.map_err(backend)
    }

    pub async fn list_keys(&self, prefix: &str, cursor: Option<&str>, limit: usize) -> KvResult<KeyPage> {
        if limit == 0 {
            return Ok(KeyPage { keys: Vec::new(), cursor: cursor.map(str::to_owned) });
        }
        // Lower bound: after the cursor, or from the prefix, whichever is further.
        let min: Vec<u8> = match cursor {
            Some(c) if c >= prefix => [b"(", c.as_bytes()].concat(),
            _ if prefix.is_empty() => b"-".to_vec(),
            _ => [b"[", prefix.as_bytes()].concat(),
        };
        // Upper bound: below the first string that no longer starts with the prefix.
        let max: Vec<u8> = match super::prefix_successor(prefix.as_bytes()) {
            Some(end) => [b"(".as_slice(), &end].concat(),
            None => b"+".to_vec(),
        };
        let raw: Vec<Vec<u8>> = ::redis::cmd("ZRANGEBYLEX")
            .arg(&self.index)
            .arg(min)
            .arg(max)
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        let more = raw.len() > limit;
        let keys = raw
            .into_iter()
            .take(limit)
            .map(|k| String::from_utf8(k).map_err(|_| KvError::Backend("a stored key is not UTF-8".into())))
            .collect::<KvResult<Vec<String>>>()?;
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, cursor })
    }

    pub async fn swap(&self, key: &str, expected_version: u64, value: &[u8]) -> KvResult<bool> {
        let mut invocation = self.swap.prepare_invoke();
        invocation
            .key(&self.index)
            .key(&self.counter)
            .key(self.data_key(key))
            .arg(key)
            .arg(expected_version.to_string())
            .arg(value);
        let wrote: i64 = invocation.invoke_async(&mut self.conn.clone()).await.map_err(backend)?;
        Ok(wrote == 1)
    }

    pub async fn increment(&self, key: &str, delta: i64) -> KvResult<i64> {
        let mut invocation = self.increment.prepare_invoke();
        invocation.key(&self.index).key(&self.counter).key(self.data_key(key)).arg(key).arg(delta.to_string());
        let (status, value): (String, String) =
            invocation.invoke_async(&mut self.conn.clone()).await.map_err(backend)?;
        match status.as_str() {
            "ok" => value.parse().map_err(|_| KvError::Backend(format!("counter answered {value:?}"))),
            "nan" => Err(KvError::NotAnInteger),
            "overflow" => Err(KvError::Invalid(format!("adding {delta} to the counter at {key:?} overflows i64"))),
            other => Err(KvError::Backend(format!("unexpected increment status {other:?}"))),
        }
    }

    pub async fn get_many(&self, keys: &[String]) -> KvResult<Vec<(String, Option<Vec<u8>>)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // MULTI/EXEC: one consistent snapshot of all the keys.
        let mut pipe = ::redis::pipe();
        pipe.atomic();
        for key in keys {
            pipe.cmd("HGET").arg(self.data_key(key)).arg("v");
        }
        let values: Vec<Option<Vec<u8>>> = pipe.query_async(&mut self.conn.clone()).await.map_err(backend)?;
        if values.len() != keys.len() {
            return Err(KvError::Backend(format!("asked for {} keys, got {} answers", keys.len(), values.len())));
        }
        Ok(keys.iter().cloned().zip(values).collect())
    }

    pub async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> KvResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut invocation = self.set_many.prepare_invoke();
        invocation.key(&self.index).key(&self.counter);
        for (key, value) in entries {
            invocation.key(self.data_key(key)).arg(key).arg(value);
        }
        invocation.invoke_async::<()>(&mut self.conn.clone()).await.map_err(backend)
    }

    pub async fn delete_many(&self, keys: &[String]) -> KvResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut invocation = self.delete_many.prepare_invoke();
        invocation.key(&self.index);
        for key in keys {
            invocation.key(self.data_key(key)).arg(key);
        }
        invocation.invoke_async::<()>(&mut self.conn.clone()).await.map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_passwords() {
        assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(redact_url("redis://:s3cret@host:6379"), "redis://:***@host:6379");
        assert_eq!(redact_url("rediss://user:s3cret@host"), "rediss://user:***@host");
        assert_eq!(redact_url("redis://token@host"), "redis://***@host");
    }
}

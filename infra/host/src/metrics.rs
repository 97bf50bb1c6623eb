//! Prometheus metrics, served as text on the admin port at `/metrics`.

use crate::db::SqliteDb;
use crate::kv::KvStore;
use crate::kv::cache::KvCache;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    component: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    consumer: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    store: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: String,
}

/// Latency buckets in seconds: 50 µs to 10 s.
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    ])
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<ComponentLabels, Histogram, fn() -> Histogram>,
    instantiate_seconds: Family<ComponentLabels, Histogram, fn() -> Histogram>,
    published: Family<ComponentLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    queue_pending: Gauge,
    queue_dead: Gauge,
    in_flight: Gauge,
}

/// Cheap to clone; every clone records into the same registry.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The embedded stores' read-cache lookups (`kv_cache_lookups`), read from the caches' own
/// counters at each scrape, and the bytes their databases' write-back buffers hold
/// (`kv_write_buffer_bytes`: near zero between flushes; writes fail past 256 MiB).
#[derive(Debug)]
struct KvCacheCollector(Vec<(String, Arc<KvCache>, Arc<SqliteDb>)>);

impl Collector for KvCacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "kv_cache_lookups",
            "Reads of the embedded key-value store, by store and outcome (hit: answered from the read cache)",
            None,
            MetricType::Counter,
        )?;
        for (store, cache, _) in &self.0 {
            for (outcome, total) in [("hit", &cache.stats.hits), ("miss", &cache.stats.misses)] {
                let labels = CacheLabels { store: store.clone(), outcome };
                ConstCounter::new(total.load(Ordering::Relaxed)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "kv_write_buffer_bytes",
            "Bytes of key-value writes logged but not yet in SQLite, by store (stores on one database report the same buffer)",
            None,
            MetricType::Gauge,
        )?;
        for (store, _, db) in &self.0 {
            let bytes = db.write_back().bytes() as i64;
            ConstGauge::new(bytes).encode(family.encode_family(&StoreLabels { store: store.clone() })?)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// Metrics of a host whose key-value stores are `kv` (their read caches are counted).
    pub fn new(kv: &HashMap<String, KvStore>) -> Metrics {
        let mut registry = Registry::with_prefix("bss");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::<ComponentLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let instantiate_seconds = Family::<ComponentLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let published = Family::<ComponentLabels, Counter>::default();
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        let rejected = Family::<RejectLabels, Counter>::default();
        let queue_pending = Gauge::default();
        let queue_dead = Gauge::default();
        let in_flight = Gauge::default();
        registry.register("http_requests", "HTTP requests answered, by component and status", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by component",
            request_seconds.clone(),
        );
        registry.register(
            "instantiate_duration_seconds",
            "Time to instantiate a component",
            instantiate_seconds.clone(),
        );
        registry.register("http_requests_in_flight", "HTTP requests being handled", in_flight.clone());
        registry.register("queue_published", "Messages published, by publishing component", published.clone());
        registry.register(
            "queue_deliveries",
            "Queue deliveries, by consumer and outcome (ack, retry, dead)",
            deliveries.clone(),
        );
        registry.register(
            "http_rejected",
            "Requests refused by the host before a component ran, by reason",
            rejected.clone(),
        );
        let caches = kv
            .iter()
            .filter_map(|(label, store)| match store {
                KvStore::Sqlite(s) => Some((label.clone(), s.cache(), s.db())),
                KvStore::Redis(_) => None,
            })
            .collect();
        registry.register_collector(Box::new(KvCacheCollector(caches)));
        registry.register("queue_pending", "Deliveries waiting or in progress", queue_pending.clone());
        registry.register("queue_dead_letters", "Deliveries in the dead-letter list", queue_dead.clone());
        Metrics(Arc::new(Inner {
            registry,
            requests,
            request_seconds,
            instantiate_seconds,
            published,
            deliveries,
            rejected,
            queue_pending,
            queue_dead,
            in_flight,
        }))
    }

    pub fn request(&self, component: &str, status: u16, elapsed: Duration) {
        self.0.requests.get_or_create(&RequestLabels { component: component.to_string(), status }).inc();
        self.0
            .request_seconds
            .get_or_create(&ComponentLabels { component: component.to_string() })
            .observe(elapsed.as_secs_f64());
    }

    /// A request the host answered itself (`not_found`, `too_large`, `overloaded`, `timeout`).
    pub fn rejected(&self, reason: &'static str) {
        self.0.rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    pub fn instantiated(&self, component: &str, elapsed: Duration) {
        self.0
            .instantiate_seconds
            .get_or_create(&ComponentLabels { component: component.to_string() })
            .observe(elapsed.as_secs_f64());
    }

    pub fn published(&self, component: &str) {
        self.0.published.get_or_create(&ComponentLabels { component: component.to_string() }).inc();
    }

    pub fn delivered(&self, consumer: &str, outcome: &'static str) {
        self.0.deliveries.get_or_create(&DeliveryLabels { consumer: consumer.to_string(), outcome }).inc();
    }

    pub fn in_flight(&self, delta: i64) {
        self.0.in_flight.inc_by(delta);
    }

    /// Render everything in the Prometheus text format, with the queue depth read just now.
    pub fn render(&self, depth: Option<&crate::queue::Depth>) -> String {
        if let Some(d) = depth {
            self.0.queue_pending.set(d.pending as i64);
            self.0.queue_dead.set(d.dead as i64);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.0.registry).is_err() {
            out.clear();
        }
        out
    }
}

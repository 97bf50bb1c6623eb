//! The application manifest: a Spin v2 `spin.toml`, read strictly.
//!
//! What is read: `[application]`, `[variables]`, `[[trigger.http]]` (`route`, `component`),
//! `[[trigger.queue]]` (our trigger for queue consumers: `component`, `subjects`,
//! `max_attempts`, `backoff_initial_ms`, `backoff_max_ms`, `concurrency`), and per component
//! `source`, `key_value_stores`, `allowed_outbound_hosts`, `variables`, `build.command`,
//! `build.workdir`. Every error names the file, the component and the field.

use crate::queue::RetryPolicy;
use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: u32,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
struct RawApplication {
    name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawVariable {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<RawHttpTrigger>,
    #[serde(default)]
    queue: Vec<RawQueueTrigger>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTrigger {
    route: String,
    component: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    executor: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueueTrigger {
    component: String,
    subjects: Vec<String>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    backoff_initial_ms: Option<u64>,
    #[serde(default)]
    backoff_max_ms: Option<u64>,
    #[serde(default)]
    concurrency: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    source: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    build: Option<RawBuild>,
    #[serde(default)]
    files: Option<toml::Value>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    command: String,
    #[serde(default)]
    workdir: Option<String>,
    #[serde(default)]
    watch: Vec<String>,
}

/// The application as the host runs it.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub name: String,
    pub variables: BTreeMap<String, RawVariable>,
    pub components: BTreeMap<String, Component>,
    pub routes: Vec<Route>,
    pub consumers: Vec<Consumer>,
}

#[derive(Debug, Clone)]
pub struct Component {
    pub id: String,
    /// Absolute path of the `.wasm`.
    pub source: PathBuf,
    pub key_value_stores: Vec<String>,
    pub allowed_outbound_hosts: Vec<String>,
    /// Component variable name → template (`"{{ app_var }}"` or a literal).
    pub variables: BTreeMap<String, String>,
    pub environment: BTreeMap<String, String>,
    pub build: Option<Build>,
}

#[derive(Debug, Clone)]
pub struct Build {
    pub command: String,
    pub workdir: PathBuf,
}

/// An HTTP route: `/exact` or `/prefix/...` (wildcard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The route as written.
    pub pattern: String,
    /// Path without the `/...` suffix.
    pub base: String,
    pub wildcard: bool,
    pub component: String,
}

#[derive(Debug, Clone)]
pub struct Consumer {
    pub component: String,
    pub subjects: Vec<String>,
    pub retry: RetryPolicy,
    pub concurrency: usize,
}

/// Most deliveries one consumer handles at once.
pub const CONSUMER_CONCURRENCY_MAX: usize = 256;

impl Route {
    fn parse(pattern: &str, component: &str) -> Result<Route, String> {
        if !pattern.starts_with('/') {
            return Err(format!("route {pattern:?} must start with '/'"));
        }
        let (base, wildcard) = match pattern.strip_suffix("/...") {
            Some(base) => (base.to_string(), true),
            None if pattern.contains("...") => {
                return Err(format!("route {pattern:?}: '...' is only allowed as a final '/...'"));
            }
            None => (pattern.trim_end_matches('/').to_string(), false),
        };
        Ok(Route { pattern: pattern.to_string(), base, wildcard, component: component.to_string() })
    }

    /// Does `path` fall under this route? Returns the length of the matched base (longer wins).
    pub fn matches(&self, path: &str) -> Option<usize> {
        let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
        if path == self.base || (self.base.is_empty() && path == "/") {
            return Some(self.base.len());
        }
        if self.wildcard && path.starts_with(&self.base) && path.as_bytes().get(self.base.len()) == Some(&b'/') {
            return Some(self.base.len());
        }
        None
    }
}

/// Pick the route for `path`: an exact route beats a wildcard of the same base, a longer base
/// beats a shorter one.
pub fn route_for<'a>(routes: &'a [Route], path: &str) -> Option<&'a Route> {
    routes
        .iter()
        .filter_map(|r| r.matches(path).map(|len| (len, !r.wildcard, r)))
        .max_by_key(|(len, exact, _)| (*len, *exact))
        .map(|(_, _, r)| r)
}

fn err_at(file: &Path, what: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{}: {what}", file.display())
}

impl Manifest {
    pub fn load(path: &Path) -> anyhow::Result<Manifest> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading manifest {}", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        Self::parse(&text, path, &dir)
    }

    /// Parse manifest text; relative paths are resolved against `dir`.
    pub fn parse(text: &str, path: &Path, dir: &Path) -> anyhow::Result<Manifest> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| err_at(path, e))?;
        if raw.spin_manifest_version != 2 {
            bail!(err_at(path, format!("spin_manifest_version must be 2, found {}", raw.spin_manifest_version)));
        }
        let _ = (&raw.application.version, &raw.application.description);
        for (name, var) in &raw.variables {
            if !valid_variable_name(name) {
                bail!(err_at(path, format!("[variables] {name:?}: names are lowercase letters, digits and '_'")));
            }
            if var.required && var.default.is_some() {
                bail!(err_at(path, format!("[variables.{name}]: a required variable cannot have a default")));
            }
        }

        let mut components = BTreeMap::new();
        for (id, value) in raw.component {
            let c: RawComponent = value.try_into().map_err(|e| err_at(path, format!("[component.{id}]: {e}")))?;
            let _ = (&c.description, &c.files);
            for store in &c.key_value_stores {
                if store.is_empty() {
                    bail!(err_at(path, format!("[component.{id}] key_value_stores: empty store label")));
                }
            }
            for host in &c.allowed_outbound_hosts {
                crate::outbound::AllowedHost::parse(host)
                    .map_err(|e| err_at(path, format!("[component.{id}] allowed_outbound_hosts: {e}")))?;
            }
            for (name, template) in &c.variables {
                if !valid_variable_name(name) {
                    bail!(err_at(path, format!("[component.{id}.variables] {name:?}: invalid name")));
                }
                for referenced in crate::variables::template_refs(template)
                    .map_err(|e| err_at(path, format!("[component.{id}.variables] {name}: {e}")))?
                {
                    if !raw.variables.contains_key(&referenced) {
                        bail!(err_at(
                            path,
                            format!(
                                "[component.{id}.variables] {name}: refers to undefined application variable {referenced:?}"
                            )
                        ));
                    }
                }
            }
            let build = c.build.map(|b| {
                let _ = &b.watch;
                Build { command: b.command, workdir: dir.join(b.workdir.unwrap_or_default()) }
            });
            components.insert(
                id.clone(),
                Component {
                    id: id.clone(),
                    source: dir.join(&c.source),
                    key_value_stores: c.key_value_stores,
                    allowed_outbound_hosts: c.allowed_outbound_hosts,
                    variables: c.variables,
                    environment: c.environment,
                    build,
                },
            );
        }

        let mut routes: Vec<Route> = Vec::new();
        for (i, t) in raw.trigger.http.iter().enumerate() {
            let _ = (&t.id, &t.executor);
            if !components.contains_key(&t.component) {
                bail!(err_at(path, format!("[[trigger.http]] #{} component: no [component.{}]", i + 1, t.component)));
            }
            let route = Route::parse(&t.route, &t.component)
                .map_err(|e| err_at(path, format!("[[trigger.http]] #{} ({}) route: {e}", i + 1, t.component)))?;
            if let Some(dup) = routes.iter().find(|r| r.base == route.base && r.wildcard == route.wildcard) {
                bail!(err_at(
                    path,
                    format!(
                        "[[trigger.http]] route {:?} of {} duplicates the route of {}",
                        t.route, t.component, dup.component
                    )
                ));
            }
            routes.push(route);
        }

        let mut consumers = Vec::new();
        for (i, t) in raw.trigger.queue.iter().enumerate() {
            let at = |field: &str, e: String| {
                err_at(path, format!("[[trigger.queue]] #{} ({}) {field}: {e}", i + 1, t.component))
            };
            if !components.contains_key(&t.component) {
                bail!(at("component", format!("no [component.{}]", t.component)));
            }
            if t.subjects.is_empty() {
                bail!(at("subjects", "at least one subject pattern is needed".into()));
            }
            for s in &t.subjects {
                let ok = !s.is_empty()
                    && s.split('.').all(|tok| {
                        tok == "*"
                            || tok == ">"
                            || (!tok.is_empty() && tok.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b)))
                    })
                    && !s.split('.').rev().skip(1).any(|tok| tok == ">");
                if !ok {
                    bail!(at("subjects", format!("{s:?} is not a subject pattern (tokens, '*', final '>')")));
                }
            }
            let mut retry = RetryPolicy::default();
            if let Some(n) = t.max_attempts {
                if !(1..=100).contains(&n) {
                    bail!(at("max_attempts", format!("{n} is not in 1..=100")));
                }
                retry.max_attempts = n;
            }
            if let Some(ms) = t.backoff_initial_ms {
                retry.backoff_initial = Duration::from_millis(ms.max(1));
            }
            if let Some(ms) = t.backoff_max_ms {
                retry.backoff_max = Duration::from_millis(ms.max(1));
            }
            if retry.backoff_max < retry.backoff_initial {
                bail!(at("backoff_max_ms", "must not be below backoff_initial_ms".into()));
            }
            let concurrency = t.concurrency.unwrap_or(16);
            if !(1..=CONSUMER_CONCURRENCY_MAX).contains(&concurrency) {
                bail!(at("concurrency", format!("{concurrency} is not in 1..={CONSUMER_CONCURRENCY_MAX}")));
            }
            consumers.push(Consumer {
                component: t.component.clone(),
                subjects: t.subjects.clone(),
                retry,
                concurrency,
            });
        }

        Ok(Manifest {
            path: path.to_path_buf(),
            name: raw.application.name,
            variables: raw.variables,
            components,
            routes,
            consumers,
        })
    }

    /// Consumer ids (their component ids) subscribed to `subject`.
    pub fn consumers_of(&self, subject: &str) -> Vec<String> {
        self.consumers
            .iter()
            .filter(|c| c.subjects.iter().any(|p| crate::queue::subject_matches(p, subject)))
            .map(|c| c.component.clone())
            .collect()
    }
}

fn valid_variable_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.as_bytes()[0].is_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Manifest> {
        Manifest::parse(text, Path::new("spin.toml"), Path::new("/app"))
    }

    const OK: &str = r#"
spin_manifest_version = 2
[application]
name = "bss"
[variables]
admin_key = { required = true, secret = true }
[[trigger.http]]
route = "/a/..."
component = "a"
[[trigger.http]]
route = "/a/exact"
component = "b"
[[trigger.queue]]
component = "b"
subjects = ["order.>"]
max_attempts = 3
[component.a]
source = "a.wasm"
key_value_stores = ["default"]
[component.a.variables]
key = "{{ admin_key }}"
[component.b]
source = "b.wasm"
"#;

    #[test]
    fn reads_a_spin_manifest() {
        let m = parse(OK).unwrap();
        assert_eq!(m.components["a"].source, PathBuf::from("/app/a.wasm"));
        assert_eq!(m.routes.len(), 2);
        assert_eq!(m.consumers[0].retry.max_attempts, 3);
        assert_eq!(m.consumers_of("order.created"), vec!["b".to_string()]);
        assert!(m.consumers_of("bill.created").is_empty());
    }

    #[test]
    fn routes_pick_the_longest_match() {
        let m = parse(OK).unwrap();
        assert_eq!(route_for(&m.routes, "/a/exact").unwrap().component, "b");
        assert_eq!(route_for(&m.routes, "/a/exact/x").unwrap().component, "a");
        assert_eq!(route_for(&m.routes, "/a").unwrap().component, "a");
        assert_eq!(route_for(&m.routes, "/a/other").unwrap().component, "a");
        assert!(route_for(&m.routes, "/ab").is_none());
        assert!(route_for(&m.routes, "/").is_none());
    }

    #[test]
    fn errors_name_the_component_and_field() {
        let bad_route = OK.replace("route = \"/a/exact\"", "route = \"a/exact\"");
        let e = parse(&bad_route).unwrap_err().to_string();
        assert!(e.contains("spin.toml") && e.contains("(b) route"), "{e}");

        let bad_var = OK.replace("{{ admin_key }}", "{{ nope }}");
        let e = parse(&bad_var).unwrap_err().to_string();
        assert!(e.contains("[component.a.variables] key") && e.contains("nope"), "{e}");

        let unknown = OK.replace("source = \"b.wasm\"", "source = \"b.wasm\"\nsorce = 1");
        let e = parse(&unknown).unwrap_err().to_string();
        assert!(e.contains("[component.b]") && e.contains("sorce"), "{e}");

        let bad_attempts = OK.replace("max_attempts = 3", "max_attempts = 0");
        let e = parse(&bad_attempts).unwrap_err().to_string();
        assert!(e.contains("max_attempts"), "{e}");
    }
}

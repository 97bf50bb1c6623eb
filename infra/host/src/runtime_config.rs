//! `runtime-config.toml`, Spin style: where each key-value store label and the queue live.
//!
//! ```toml
//! [key_value_store.default]
//! type = "redis"                 # or "sqlite" (alias "spin"): the embedded database
//! url = "redis://127.0.0.1:6379"
//!
//! [queue]
//! type = "redis"
//! url = "redis://127.0.0.1:6379"
//! ```
//! Without a file, every label and the queue use the embedded SQLite database of the data folder.

use anyhow::{Context as _, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub key_value_store: BTreeMap<String, Backend>,
    #[serde(default)]
    pub queue: Option<Backend>,
}

/// Where one store (or the queue) lives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Backend {
    /// The embedded database; `path` picks another SQLite file than the data folder's.
    #[serde(alias = "spin")]
    Sqlite {
        #[serde(default)]
        path: Option<PathBuf>,
    },
    Redis {
        url: String,
    },
}

impl RuntimeConfig {
    pub fn load(path: &Path) -> anyhow::Result<RuntimeConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading runtime config {}", path.display()))?;
        let mut config: RuntimeConfig =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // Relative paths are relative to the file, as in Spin.
        let dir = path.parent().unwrap_or(Path::new("."));
        for (label, backend) in &mut config.key_value_store {
            match backend {
                Backend::Sqlite { path: Some(p) } if p.is_relative() => *p = dir.join(&*p),
                Backend::Redis { url } if !url.starts_with("redis://") && !url.starts_with("rediss://") => {
                    bail!("{}: [key_value_store.{label}] url must start with redis:// or rediss://", path.display())
                }
                _ => {}
            }
        }
        Ok(config)
    }

    /// The backend of `label`: configured, or the embedded database.
    pub fn store(&self, label: &str) -> Backend {
        self.key_value_store.get(label).cloned().unwrap_or(Backend::Sqlite { path: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_spin_style_config() {
        let c: RuntimeConfig = toml::from_str(
            r#"
[key_value_store.default]
type = "redis"
url = "redis://127.0.0.1:6379"
[key_value_store.cache]
type = "spin"
[queue]
type = "redis"
url = "redis://127.0.0.1:6379"
"#,
        )
        .unwrap();
        assert_eq!(c.store("default"), Backend::Redis { url: "redis://127.0.0.1:6379".into() });
        assert_eq!(c.store("cache"), Backend::Sqlite { path: None });
        assert_eq!(c.store("other"), Backend::Sqlite { path: None });
        assert!(toml::from_str::<RuntimeConfig>("[key_value_store.x]\ntype = \"memcached\"").is_err());
    }
}

//! Application variables and secrets, Spin style: `[variables]` declares them (with a default, or
//! `required`), `[component.X.variables]` maps a component's names to templates such as
//! `"{{ admin_key }}"`, and the environment overrides any application variable as
//! `BSS_VAR_<NAME>` (upper case). Values are resolved once at start-up; a required variable
//! with no value stops the host with a message naming it.

use crate::manifest::Manifest;
use anyhow::bail;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Names of the application variables a template refers to.
pub fn template_refs(template: &str) -> Result<Vec<String>, String> {
    let mut refs = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("unclosed '{{{{' in {template:?}"))?;
        let name = after[..end].trim();
        if name.is_empty() {
            return Err(format!("empty '{{{{ }}}}' in {template:?}"));
        }
        refs.push(name.to_string());
        rest = &after[end + 2..];
    }
    Ok(refs)
}

fn render(template: &str, values: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        if let Some(v) = values.get(after[..end].trim()) {
            out.push_str(v);
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Resolved component variables: component id → name → value.
#[derive(Debug, Clone, Default)]
pub struct Variables(Arc<HashMap<String, BTreeMap<String, String>>>);

impl Variables {
    /// Resolve every component's variables, reading overrides through `env`.
    pub fn resolve(manifest: &Manifest, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Variables> {
        let mut app = HashMap::new();
        let mut missing = Vec::new();
        for (name, decl) in &manifest.variables {
            match env(&format!("BSS_VAR_{}", name.to_ascii_uppercase())).or_else(|| decl.default.clone()) {
                Some(v) => {
                    app.insert(name.clone(), v);
                }
                None if decl.required => missing.push(format!("BSS_VAR_{}", name.to_ascii_uppercase())),
                None => {}
            }
        }
        if !missing.is_empty() {
            bail!("required variables have no value; set {} in the environment", missing.join(", "));
        }
        let mut out = HashMap::new();
        for (id, c) in &manifest.components {
            let vars = c
                .variables
                .iter()
                .filter(|(_, t)| template_refs(t).unwrap_or_default().iter().all(|r| app.contains_key(r)))
                .map(|(name, t)| (name.clone(), render(t, &app)))
                .collect();
            out.insert(id.clone(), vars);
        }
        Ok(Variables(Arc::new(out)))
    }

    /// The value of `name` for `component`, if defined and set.
    pub fn get(&self, component: &str, name: &str) -> Option<&str> {
        self.0.get(component)?.get(name).map(String::as_str)
    }

    /// Whether `component` declares `name` at all.
    pub fn declares(manifest: &Manifest, component: &str, name: &str) -> bool {
        manifest.components.get(component).is_some_and(|c| c.variables.contains_key(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn templates_render_and_env_overrides() {
        assert_eq!(template_refs("a{{ x }}b{{y}}").unwrap(), vec!["x", "y"]);
        assert!(template_refs("{{ x").is_err());
        let m = Manifest::parse(
            r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
region = { default = "eu" }
secret = { required = true }
[component.c]
source = "c.wasm"
[component.c.variables]
url = "https://{{ region }}.example/{{ secret }}"
"#,
            Path::new("spin.toml"),
            Path::new("."),
        )
        .unwrap();
        assert!(Variables::resolve(&m, |_| None).unwrap_err().to_string().contains("BSS_VAR_SECRET"));
        let v = Variables::resolve(&m, |k| (k == "BSS_VAR_SECRET").then(|| "s3".to_string())).unwrap();
        assert_eq!(v.get("c", "url"), Some("https://eu.example/s3"));
        assert_eq!(v.get("c", "nope"), None);
    }
}

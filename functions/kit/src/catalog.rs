//! Reading a tenant's product catalog from any component: the resource kinds of the catalog API
//! and the in-memory [`Snapshot`] that the catalog's checks, quotes and orders all price against.
//! Lives in the kit (not in the catalog component, a cdylib) so quote and order read the catalog
//! the one way the catalog itself does.

use bss_domain::catalog::{Kind as DomainKind, Snapshot};

use crate::error::ApiError;
use crate::kv::KvBackend;
use crate::resource::{Env, Kind};

/// The catalog API base path.
pub const BASE: &str = "/tmf-api/productCatalogManagement/v4";

/// The resource-layer kind of a catalog domain kind.
pub fn kind(k: DomainKind) -> Kind {
    Kind { collection: k.collection(), type_name: k.type_name(), base_path: BASE, domain: "catalog" }
}

/// The tenant's whole catalog (every kind, at most [`crate::resource::MAX_LISTED`] per kind).
pub fn snapshot<B: KvBackend>(env: &Env<'_, B>) -> Result<Snapshot, ApiError> {
    let mut snap = Snapshot::new();
    for k in DomainKind::ALL {
        for doc in env.resources(kind(k)).all()? {
            snap.insert(k, doc);
        }
    }
    Ok(snap)
}

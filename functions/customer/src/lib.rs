//! `customer`: the customer management component — TMF632 parties, TMF629 customers, TMF666
//! accounts and their hierarchies, TMF669 partner roles, the single customer view, erasure of a
//! person and the audit trail. Build with `cargo build --target wasm32-wasip2 --profile release-lto -p customer`;
//! tested end to end by `cargo test -p bss-host --test e2e_customer`, its rules natively by
//! `cargo test -p bss-domain customer` and `cargo test -p customer`.
//!
//! Every route needs a tenant API key (`Authorization: Bearer bss_...`); documents are stored per
//! tenant at `t/<tenant>/<collection>/<id>` as their TMF JSON (attributes not modelled here are
//! kept). CRUD and lists come from the kit's generic resource layer (`bss_kit::resource`); what is
//! specific lives in [`rules::Rules`], its hooks: validation by `bss_domain::customer` (a
//! document is read through typed views; a refusal names the attribute and the rule, and nothing is
//! stored), references that must resolve, delete guards, and the audit record of every write.
//!
//! Routes (each collection: `POST` create → 201, `GET` list with `fields`/`offset`/`limit`/
//! filters, `GET /{id}`, `PATCH /{id}` merge patch, `DELETE /{id}` → 204):
//! - `/tmf-api/party/v4/individual`, `/organization`; `POST .../individual/{id}/erase`
//!   `{"reason"}`; `GET /tmf-api/party/v4/erasureRecord[/{id}]`.
//! - `/tmf-api/customerManagement/v4/customer`; `GET .../customer/{id}/view` (single view);
//!   `GET /tmf-api/customerManagement/v4/auditRecord?resourceId=...` (oldest first).
//! - `/tmf-api/accountManagement/v4/billingAccount`, `/partyAccount`, `/settlementAccount`;
//!   `GET .../{type}/{id}/hierarchy`.
//! - `/tmf-api/partyRoleManagement/v4/partyRole` (partners).
//!
//! Hierarchies: `parentAccount {id}` + `billRollUp` (BSS extensions). Moving a subtree is one
//! `PATCH` of `parentAccount` on its root (`null` detaches it); a move that would make a cycle is
//! refused with 422 naming the chain; depth ≤ 64, subtrees ≤ 10,000 accounts. The checks read the
//! tenant's accounts of that type (at most 10,000 — the kit's `MAX_LISTED`; beyond that hierarchy
//! changes are refused with 409 rather than checked on a partial forest). Two concurrent moves
//! can each pass their check and together close a loop; so after a move is stored its ancestors
//! are walked again with fresh reads, and a move that closed a loop is reverted and answered 409
//! (of two such moves at least the later check sees the loop, so none persists).
//!
//! Audit trail: every create, patch, move, erase and delete writes `{id, resourceType,
//! resourceId, action, actor {tenantId, keyId}, at, resourceVersion, changes [{path, old, new}],
//! state, basedOn}` under `auditRecord/<resourceId>:<lastUpdate ms>-<fingerprint of the new
//! document>` (time-ordered per resource; `GET .../auditRecord?resourceId=` reads only that key
//! range). The record is written *ahead* of the change (`state: pending`, from the validation
//! hook, once every rule passed) and confirmed under the same key after it (`state: recorded`,
//! with the stored version), so a function that stops between the two (trap, time limit, host
//! crash) leaves a pending record — the change may or may not have been stored — and never a
//! change without a record. `basedOn` names the version the change started from; only one write
//! can succeed from a version, so a pending record with a recorded sibling of the same `basedOn`
//! is an attempt that lost the compare-and-swap: the winner deletes those it finds, and readers
//! never see the ones written after that.
//!
//! Erasure (`POST .../individual/{id}/erase`): in this order, so that an erasure is never done
//! unrecorded — (1) the `erasureRecord` (id = the party's id) is written; (2) the individual is
//! replaced by its erased form (names → a stable pseudonym `erased-<hash of the id>`, every other
//! attribute but `id`, `href`, `@type` removed — an allow-list, so unknown attributes go too —
//! status `erased`; its id stays, so customers, accounts and later invoices still resolve), and
//! the documents pointing at it lose the person's name: the `name` of the customers it is engaged
//! as and the `name` inside `engagedParty` / `relatedParty` references; (3) the personal values in
//! the person's audit records, and those attributes in the records of the pointing documents, are
//! replaced by `[erased]`. A repeated erase re-runs step 3 and answers 409; any other change of an
//! erased person is refused with 409. Free text elsewhere that happens to contain the name (an
//! account called "Ada's account") is not detected.
//!
//! Single view (`GET .../customer/{id}/view`): the customer, its engaged party, every customer of
//! that party (`partyCustomers`), the account trees of the accounts it owns (its `account[]` refs
//! and every account whose `relatedParty` names the customer or its party) and the party's partner
//! roles, the customer's products (`products`, the TMF637 inventory) and its orders
//! (`productOrders`: id, state, dates; the order itself is the tracking view). Bills, balances
//! and usage join this view as the components that own those collections land; until then the
//! view does not have those sections (nothing is invented).

mod rules;
mod views;

use bss_kit::http::Router;
use bss_kit::http::{handler, method_not_allowed, not_found};
use bss_kit::resource::{Kind, register};
use spin_sdk::http::{Request, Response};

pub use rules::Rules;

bss_kit::export_http!(route);

/// Event domain of every customer management event.
pub const DOMAIN: &str = "customer";
const PARTY: &str = "/tmf-api/party/v4";
const CUSTOMER: &str = "/tmf-api/customerManagement/v4";
const ACCOUNT: &str = "/tmf-api/accountManagement/v4";
const ROLE: &str = "/tmf-api/partyRoleManagement/v4";

/// TMF632 individual.
pub const INDIVIDUAL: Kind =
    Kind { collection: "individual", type_name: "Individual", base_path: PARTY, domain: DOMAIN };
/// TMF632 organization.
pub const ORGANIZATION: Kind =
    Kind { collection: "organization", type_name: "Organization", base_path: PARTY, domain: DOMAIN };
/// TMF629 customer.
pub const CUSTOMER_KIND: Kind =
    Kind { collection: "customer", type_name: "Customer", base_path: CUSTOMER, domain: DOMAIN };
/// TMF666 billing account.
pub const BILLING_ACCOUNT: Kind =
    Kind { collection: "billingAccount", type_name: "BillingAccount", base_path: ACCOUNT, domain: DOMAIN };
/// TMF666 party account.
pub const PARTY_ACCOUNT: Kind =
    Kind { collection: "partyAccount", type_name: "PartyAccount", base_path: ACCOUNT, domain: DOMAIN };
/// TMF666 settlement account.
pub const SETTLEMENT_ACCOUNT: Kind =
    Kind { collection: "settlementAccount", type_name: "SettlementAccount", base_path: ACCOUNT, domain: DOMAIN };
/// TMF669 party role (partners).
pub const PARTY_ROLE: Kind = Kind { collection: "partyRole", type_name: "PartyRole", base_path: ROLE, domain: DOMAIN };

/// The account kinds.
pub const ACCOUNT_KINDS: [Kind; 3] = [BILLING_ACCOUNT, PARTY_ACCOUNT, SETTLEMENT_ACCOUNT];

fn route(req: Request) -> Response {
    let mut r = Router::for_request(&req);
    r.post(&format!("{PARTY}/individual/:id/erase"), handler(views::erase));
    r.any(&format!("{PARTY}/individual/:id/erase"), method_not_allowed);
    r.get(&format!("{PARTY}/erasureRecord"), handler(views::list_erasures));
    r.get(&format!("{PARTY}/erasureRecord/:id"), handler(views::get_erasure));
    r.get(&format!("{CUSTOMER}/customer/:id/view"), handler(views::customer_view));
    r.get(&format!("{CUSTOMER}/auditRecord"), handler(views::list_audit));
    r.get(&format!("{CUSTOMER}/auditRecord/:id"), handler(views::get_audit));
    for kind in ACCOUNT_KINDS {
        r.get(&format!("{}/:id/hierarchy", kind.path()), handler(move |ctx, p| views::hierarchy(kind, ctx, p)));
    }
    for kind in
        [INDIVIDUAL, ORGANIZATION, CUSTOMER_KIND, BILLING_ACCOUNT, PARTY_ACCOUNT, SETTLEMENT_ACCOUNT, PARTY_ROLE]
    {
        register(&mut r, kind, Rules::default());
    }
    r.any("/*", not_found);
    r.handle(req)
}

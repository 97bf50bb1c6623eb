//! Where the usage component keeps a tenant's usage data (raw keys under `t/<tenantId>/`; the
//! layout is described in the usage component's `model` module). Shared because billing reads
//! the product indexes, the totals and the pending corrections the usage component writes.

/// Raw keys of one tenant's usage data.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys of `tenant`.
    pub fn new(tenant: &str) -> Keys {
        Keys { prefix: format!("t/{tenant}/") }
    }
    /// `usage/<id>`.
    pub fn usage(&self, id: &str) -> String {
        format!("{}usage/{id}", self.prefix)
    }
    /// The prefix of every usage record.
    pub fn usage_prefix(&self) -> String {
        format!("{}usage/", self.prefix)
    }
    /// `usageHeld/<id>`.
    pub fn held(&self, id: &str) -> String {
        format!("{}usageHeld/{id}", self.prefix)
    }
    /// The prefix of the held index.
    pub fn held_prefix(&self) -> String {
        format!("{}usageHeld/", self.prefix)
    }
    /// `usageByProduct/<product>/<period>/<id>`.
    pub fn by_product(&self, product: &str, period: &str, id: &str) -> String {
        format!("{}usageByProduct/{product}/{period}/{id}", self.prefix)
    }
    /// The prefix of a product's records (of one period, if given).
    pub fn by_product_prefix(&self, product: &str, period: Option<&str>) -> String {
        match period {
            Some(p) => format!("{}usageByProduct/{product}/{p}/", self.prefix),
            None => format!("{}usageByProduct/{product}/", self.prefix),
        }
    }
    /// `usageState/<product>/<period>`.
    pub fn state(&self, product: &str, period: &str) -> String {
        format!("{}usageState/{product}/{period}", self.prefix)
    }
    /// `usageTotals/<product>/<period>`: [`bss_domain::usage::UsageTotals`], read by billing.
    pub fn totals(&self, product: &str, period: &str) -> String {
        format!("{}usageTotals/{product}/{period}", self.prefix)
    }
    /// `usageAccount/<account>`.
    pub fn account(&self, account: &str) -> String {
        format!("{}usageAccount/{account}", self.prefix)
    }
    /// `usageLease/<shard>`.
    pub fn lease(&self, shard: u32) -> String {
        format!("{}usageLease/{shard}", self.prefix)
    }
    /// `usageCorrection/<run>/<id>`.
    pub fn correction(&self, run: &str, id: &str) -> String {
        format!("{}usageCorrection/{run}/{id}", self.prefix)
    }
    /// `usageCorrectionByAccount/<account>/<run>/<id>`.
    pub fn correction_by_account(&self, account: &str, run: &str, id: &str) -> String {
        format!("{}usageCorrectionByAccount/{account}/{run}/{id}", self.prefix)
    }
    /// The prefix of an account's pending corrections (billing).
    pub fn correction_by_account_prefix(&self, account: &str) -> String {
        format!("{}usageCorrectionByAccount/{account}/", self.prefix)
    }
    /// The prefix of a run's corrections.
    pub fn correction_prefix(&self, run: &str) -> String {
        format!("{}usageCorrection/{run}/", self.prefix)
    }
}

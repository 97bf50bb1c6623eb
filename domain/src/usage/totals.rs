//! A product's rated usage of one bill period summed per service as it is rated: what a bill
//! reads instead of every record. The usage component keeps it in the same atomic write as the
//! records it sums (and rebuilds it when a period is rerated). Billing trusts it at once when it
//! is [`UsageTotals::complete`], and otherwise only while it counts as many records as the
//! period's index holds. Tests: `cargo test -p bss-domain totals`.

use serde::{Deserialize, Serialize};

use crate::money::{Money, MoneyError};
use crate::rating::{RatedRecord, Service, Step};

/// Per-service sums of a product's rated records in one period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    /// One entry per service seen, in the order first seen.
    pub services: Vec<ServiceTotal>,
    /// Whether these sums count every record of the period's index, so that a bill reads them
    /// without listing the index: set when the totals were started with the period's first
    /// record, or rebuilt from all its records by a rerate; cleared for good by a record that
    /// could not be summed ([`UsageTotals::add_or_incomplete`]). False in totals kept before the
    /// flag existed, and in totals started when the index already held records rated before
    /// totals were kept: billing then compares the count with the index, as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub complete: bool,
}

/// The sums of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTotal {
    /// The service.
    pub service: Service,
    /// Records summed.
    pub records: u64,
    /// Charged quantity, base units.
    pub quantity_base_units: u64,
    /// Of which taken from allowances.
    pub allowance_base_units: u64,
    /// Σ rounded record nets.
    pub net: Money,
    /// Σ rounded record taxes.
    pub tax: Money,
    /// The tax category of the first taxed record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_category: Option<String>,
}

impl UsageTotals {
    /// The totals of `ratings`.
    pub fn of<'a>(ratings: impl IntoIterator<Item = &'a RatedRecord>) -> Result<UsageTotals, MoneyError> {
        let mut t = UsageTotals::default();
        for r in ratings {
            t.add(r)?;
        }
        Ok(t)
    }

    /// Adds one rated record; a record in another currency than its service's sums so far is
    /// refused (nothing changes).
    pub fn add(&mut self, r: &RatedRecord) -> Result<(), MoneyError> {
        let category = r.steps.iter().find_map(|s| match s {
            Step::Tax { category, .. } => Some(category.as_str().to_string()),
            _ => None,
        });
        match self.services.iter_mut().find(|s| s.service == r.service) {
            Some(s) => {
                let net = s.net.checked_add(r.net)?;
                let tax = s.tax.checked_add(r.tax)?;
                s.net = net;
                s.tax = tax;
                s.records += 1;
                s.quantity_base_units += r.charged_base_units;
                s.allowance_base_units += r.allowance_base_units;
                if s.tax_category.is_none() {
                    s.tax_category = category;
                }
            }
            None => self.services.push(ServiceTotal {
                service: r.service,
                records: 1,
                quantity_base_units: r.charged_base_units,
                allowance_base_units: r.allowance_base_units,
                net: r.net,
                tax: r.tax,
                tax_category: category,
            }),
        }
        Ok(())
    }

    /// [`UsageTotals::add`], or, when `r` cannot be summed (another currency), these totals
    /// marked as not counting every record ([`UsageTotals::complete`] false): the record is
    /// still rated, and a bill then reads the records.
    pub fn add_or_incomplete(&mut self, r: &RatedRecord) {
        if self.add(r).is_err() {
            self.complete = false;
        }
    }

    /// Records summed, every service.
    pub fn records(&self) -> u64 {
        self.services.iter().map(|s| s.records).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;
    use crate::rating::Name;
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    fn rated(service: Service, units: u64, allowance: u64, net_cents: i64, currency: &str) -> RatedRecord {
        let c = Currency::new(currency).unwrap();
        let net = Money::new(Decimal::new(net_cents, 2), c);
        let tax = Money::new(Decimal::new(net_cents / 5, 2), c);
        RatedRecord {
            record_id: "r".into(),
            tariff_id: Name::new("t"),
            tariff_version: Name::new("1"),
            service,
            measured_base_units: units,
            charged_base_units: units,
            allowance_base_units: allowance,
            overage_base_units: 0,
            blocked_base_units: 0,
            net,
            tax,
            gross: Money::new(net.amount + tax.amount, c),
            steps: vec![Step::Tax {
                tax_rate: Name::new("vat"),
                category: Name::new("telecom"),
                percent: Decimal::from(20),
                amount: tax.amount,
            }],
        }
    }

    #[test]
    fn sums_per_service_and_refuses_another_currency_unchanged() {
        let mut t = UsageTotals::default();
        t.add(&rated(Service::Voice, 60, 60, 0, "EUR")).unwrap();
        t.add(&rated(Service::Sms, 1, 0, 10, "EUR")).unwrap();
        t.add(&rated(Service::Voice, 90, 0, 68, "EUR")).unwrap();
        assert_eq!(t.records(), 3);
        let voice = &t.services[0];
        assert_eq!(
            (voice.service, voice.records, voice.quantity_base_units, voice.allowance_base_units),
            (Service::Voice, 2, 150, 60)
        );
        assert_eq!(voice.net.amount, Decimal::new(68, 2));
        assert_eq!(voice.tax_category.as_deref(), Some("telecom"));
        let before = t.clone();
        assert!(t.add(&rated(Service::Voice, 1, 0, 5, "USD")).is_err());
        assert_eq!(t, before);
    }

    #[test]
    fn a_record_that_cannot_be_summed_makes_complete_totals_incomplete_for_good() {
        let mut t = UsageTotals { complete: true, ..UsageTotals::default() };
        t.add_or_incomplete(&rated(Service::Voice, 60, 0, 10, "EUR"));
        assert!(t.complete);
        t.add_or_incomplete(&rated(Service::Voice, 60, 0, 10, "USD"));
        assert!(!t.complete);
        assert_eq!(t.records(), 1, "the record in another currency is not summed");
        t.add_or_incomplete(&rated(Service::Voice, 60, 0, 10, "EUR"));
        assert!(!t.complete);
    }

    #[test]
    fn totals_kept_before_the_flag_read_as_incomplete_and_complete_ones_keep_it() {
        let old: UsageTotals = serde_json::from_str(r#"{"services":[]}"#).unwrap();
        assert!(!old.complete);
        assert!(!serde_json::to_string(&old).unwrap().contains("complete"));
        let t = UsageTotals { complete: true, ..UsageTotals::default() };
        let back: UsageTotals = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert!(back.complete);
    }

    proptest! {
        /// Adding records one by one equals summing them at once, whatever the order.
        #[test]
        fn the_totals_do_not_depend_on_the_order(recs in proptest::collection::vec((0u8..3, 0u64..10_000, 0i64..10_000), 0..40)) {
            let all: Vec<RatedRecord> = recs.iter().map(|(s, u, c)| {
                rated(Service::ALL[*s as usize], *u, u / 2, *c, "EUR")
            }).collect();
            let forward = UsageTotals::of(&all).unwrap();
            let backward = UsageTotals::of(all.iter().rev()).unwrap();
            prop_assert_eq!(forward.records(), all.len() as u64);
            for s in &forward.services {
                let b = backward.services.iter().find(|x| x.service == s.service).unwrap();
                prop_assert_eq!((s.records, s.quantity_base_units, s.net, s.tax), (b.records, b.quantity_base_units, b.net, b.tax));
                let expected: Decimal = all.iter().filter(|r| r.service == s.service).map(|r| r.net.amount).sum();
                prop_assert_eq!(s.net.amount, expected);
            }
        }
    }
}

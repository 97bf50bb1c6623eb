//! A tariff prepared for rating: the catalog tariff plus indexes (a digit trie of destination
//! prefixes, sorted roaming networks, periods in seconds of the day, allowances by service, the
//! rate of each roaming zone and destination group by service), and the rating of one record
//! against it. Tests: `cargo test -p bss-domain rating`.

use chrono::{DateTime, Datelike, Duration, NaiveDateTime, TimeZone, Timelike, Utc};
use rust_decimal::Decimal;

use super::{
    Basis, Bucket, Buckets, MAX_DURATION_SECS, MAX_EVENTS, MAX_VOLUME_BYTES, Name, RatedRecord, RatingContext,
    RatingError, Service, Step, UsageRecord,
};
use crate::catalog::Lifecycle;
use crate::catalog::tariff::{Day, Dimension, Overage, RatingUnit, ServiceRate, Tariff, TierMode};
use crate::money::{Currency, Money};

/// No entry (trie node without a prefix, child absent).
const NONE: u32 = u32::MAX;
/// Most steps of the split loop (a 48 h call over 500 periods, about 2 000 edges, stays far below).
const MAX_SPLIT_STEPS: usize = 100_000;
/// Largest running total of tier units in one bill period (10^15).
const MAX_TIER_UNITS: u64 = 1_000_000_000_000_000;

#[derive(Debug, Clone)]
struct Node {
    next: [u32; 10],
    /// Index into `prefixes` of the prefix ending here.
    hit: u32,
}

#[derive(Debug, Clone)]
struct PreparedPeriod {
    /// Bit `d` set: applies on weekday `d` (Monday = 0).
    days_mask: u8,
    from_secs: u32,
    to_secs: u32,
    name: Name,
    rate: Option<Money>,
}

/// A rate and the rating unit it is per.
type Priced = (Money, RatingUnit);

/// The rate of a roaming zone or destination group for each service (by [`Service::index`]):
/// its per-service entry, else its single rate when the tariff's rating unit measures the service.
type ByService = [Option<Priced>; 3];

fn rates_by_service(rates: &[ServiceRate], single: Option<Money>, unit: RatingUnit) -> ByService {
    Service::ALL.map(|s| {
        ServiceRate::of(rates, s, unit)
            .or_else(|| single.filter(|_| unit.dimension() == s.dimension()).map(|r| (r, unit)))
    })
}

#[derive(Debug, Clone)]
struct PreparedAllowance {
    service: Option<Service>,
    initial_base_units: u64,
    unit_base_units: u64,
    overage: Overage,
}

/// A validated [`Tariff`] indexed for rating many records fast. Build once per tariff version.
#[derive(Debug, Clone)]
pub struct PreparedTariff {
    tariff: Tariff,
    id: Name,
    version: Name,
    trie: Vec<Node>,
    /// (group index, prefix).
    prefixes: Vec<(u16, Name)>,
    group_names: Vec<Name>,
    /// Rates by group index, then service.
    group_rates: Vec<ByService>,
    /// (MCC-MNC code, zone index), sorted by code.
    networks: Vec<(u32, u16)>,
    zone_names: Vec<Name>,
    /// Rates by zone index, then service.
    zone_rates: Vec<ByService>,
    periods: Vec<PreparedPeriod>,
    /// Every period edge in seconds of the day, ascending, with 86 400 (a day change).
    boundaries_secs: Vec<u32>,
    allowances: Vec<PreparedAllowance>,
    /// Allowance indexes by service, in tariff order.
    by_service: [Vec<u16>; 3],
}

/// MCC-MNC digits as a number that keeps the length (`20801` and `208010` differ).
fn network_code(n: &str) -> Option<u32> {
    if !(5..=6).contains(&n.len()) {
        return None;
    }
    let mut v: u32 = 0;
    for b in n.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
    }
    Some(v * 10 + n.len() as u32)
}

fn weekday_bit(d: &Day) -> u8 {
    1 << match d {
        Day::Mon => 0,
        Day::Tue => 1,
        Day::Wed => 2,
        Day::Thu => 3,
        Day::Fri => 4,
        Day::Sat => 5,
        Day::Sun => 6,
    }
}

impl PreparedTariff {
    /// Indexes a tariff (read with [`Tariff::read`], so its lists are within limits).
    pub fn new(tariff: Tariff) -> PreparedTariff {
        let mut trie = vec![Node { next: [NONE; 10], hit: NONE }];
        let mut prefixes = Vec::new();
        for (gi, g) in tariff.destination_groups.iter().enumerate() {
            for p in &g.prefixes {
                let mut at = 0usize;
                for b in p.bytes().filter(u8::is_ascii_digit) {
                    let d = usize::from(b - b'0');
                    if trie[at].next[d] == NONE {
                        trie[at].next[d] = trie.len() as u32;
                        trie.push(Node { next: [NONE; 10], hit: NONE });
                    }
                    at = trie[at].next[d] as usize;
                }
                // Validation refuses duplicates; should one slip through, the first group keeps it,
                // like the tariff's own lookup.
                if at != 0 && trie[at].hit == NONE {
                    trie[at].hit = prefixes.len() as u32;
                    prefixes.push((gi as u16, Name::new(p)));
                }
            }
        }
        let mut networks: Vec<(u32, u16)> = Vec::new();
        for (zi, z) in tariff.roaming_zones.iter().enumerate() {
            for n in &z.visited_networks {
                if let Some(code) = network_code(n)
                    && !networks.iter().any(|(c, _)| *c == code)
                {
                    networks.push((code, zi as u16));
                }
            }
        }
        networks.sort_unstable();
        let periods: Vec<PreparedPeriod> = tariff
            .periods
            .iter()
            .map(|p| {
                let (from_secs, to_secs) = p.bounds_secs().unwrap_or((0, 0));
                let days_mask =
                    if p.days.is_empty() { 0x7f } else { p.days.iter().map(weekday_bit).fold(0, |a, b| a | b) };
                PreparedPeriod { days_mask, from_secs, to_secs, name: Name::new(&p.name), rate: p.rate }
            })
            .collect();
        let mut boundaries_secs: Vec<u32> = periods.iter().flat_map(|p| [p.from_secs, p.to_secs]).collect();
        boundaries_secs.push(86_400);
        boundaries_secs.retain(|b| *b > 0);
        boundaries_secs.sort_unstable();
        boundaries_secs.dedup();
        let allowances: Vec<PreparedAllowance> = tariff
            .allowances
            .iter()
            .map(|a| {
                let unit_base_units = a.unit.base_units();
                let base = (a.amount * Decimal::from(unit_base_units)).floor();
                PreparedAllowance {
                    service: Service::parse(&a.service),
                    initial_base_units: u64::try_from(base).unwrap_or(u64::MAX),
                    unit_base_units,
                    overage: a.overage.clone(),
                }
            })
            .collect();
        let mut by_service: [Vec<u16>; 3] = Default::default();
        for (i, a) in allowances.iter().enumerate() {
            if let Some(s) = a.service {
                by_service[s.index()].push(i as u16);
            }
        }
        PreparedTariff {
            id: Name::new(&tariff.id),
            version: Name::new(tariff.version.as_deref().unwrap_or("1")),
            group_names: tariff.destination_groups.iter().map(|g| Name::new(&g.name)).collect(),
            group_rates: tariff
                .destination_groups
                .iter()
                .map(|g| rates_by_service(&g.rates, g.rate, tariff.rating_unit))
                .collect(),
            zone_names: tariff.roaming_zones.iter().map(|z| Name::new(&z.name)).collect(),
            zone_rates: tariff
                .roaming_zones
                .iter()
                .map(|z| rates_by_service(&z.rates, z.rate, tariff.rating_unit))
                .collect(),
            trie,
            prefixes,
            networks,
            periods,
            boundaries_secs,
            allowances,
            by_service,
            tariff,
        }
    }

    /// The tariff.
    pub fn tariff(&self) -> &Tariff {
        &self.tariff
    }

    /// Its currency.
    pub fn currency(&self) -> Currency {
        self.tariff.currency
    }

    /// How many allowances [`PreparedTariff::fresh_buckets`] holds (without building them).
    pub fn allowance_count(&self) -> usize {
        self.allowances.len()
    }

    /// Full buckets for a new bill period.
    pub fn fresh_buckets(&self) -> Buckets {
        Buckets {
            tariff_id: self.tariff.id.clone(),
            allowances: self
                .allowances
                .iter()
                .map(|a| {
                    a.service.map(|service| Bucket {
                        service,
                        initial_base_units: a.initial_base_units,
                        used_base_units: 0,
                    })
                })
                .collect(),
            tier_units: Decimal::ZERO,
        }
    }

    /// The destination group index and prefix of a called number by longest prefix (a leading
    /// `+` or `00` ignored, as [`Tariff::destination`]).
    pub fn destination(&self, number: &str) -> Option<(usize, &Name)> {
        let n = number.strip_prefix('+').or_else(|| number.strip_prefix("00")).unwrap_or(number);
        let mut at = 0usize;
        let mut best = NONE;
        for b in n.bytes() {
            if !b.is_ascii_digit() {
                break;
            }
            let next = self.trie[at].next[usize::from(b - b'0')];
            if next == NONE {
                break;
            }
            at = next as usize;
            if self.trie[at].hit != NONE {
                best = self.trie[at].hit;
            }
        }
        (best != NONE).then(|| {
            let (g, p) = &self.prefixes[best as usize];
            (usize::from(*g), p)
        })
    }

    /// The roaming zone index of a visited network.
    pub fn roaming_zone(&self, mcc_mnc: &str) -> Option<usize> {
        let code = network_code(mcc_mnc)?;
        self.networks.binary_search_by_key(&code, |(c, _)| *c).ok().map(|i| usize::from(self.networks[i].1))
    }

    /// The index of the first period containing a local time.
    pub fn period(&self, local: NaiveDateTime) -> Option<usize> {
        let secs = local.time().num_seconds_from_midnight();
        let bit = 1u8 << local.weekday().num_days_from_monday();
        self.periods.iter().position(|p| p.days_mask & bit != 0 && p.from_secs <= secs && secs < p.to_secs)
    }

    /// Splits `secs` seconds from `start` into parts of one period each (local time in `tz`),
    /// calling `part(period, part_start, part_secs)` in time order; the parts sum to `secs`.
    /// At least one part, even of 0 s. A DST change inside one part is taken as the wall clock
    /// says at the part's start.
    pub fn split<F: FnMut(Option<usize>, DateTime<Utc>, u64)>(
        &self,
        start: DateTime<Utc>,
        secs: u64,
        tz: chrono_tz::Tz,
        mut part: F,
    ) {
        if self.periods.is_empty() {
            part(None, start, secs);
            return;
        }
        let mut at = start;
        let mut left = secs;
        let mut current: Option<(Option<usize>, DateTime<Utc>, u64)> = None;
        let mut steps = 0usize;
        loop {
            steps += 1;
            let local = local_time(at, tz);
            let p = self.period(local);
            let s = local.time().num_seconds_from_midnight();
            let edge = self.boundaries_secs.iter().copied().find(|b| *b > s).unwrap_or(86_400);
            let wall = u64::from(edge - s);
            let len = if left <= wall {
                left
            } else {
                // The edge back in UTC, so a DST change before it moves it; the wall-clock
                // distance when it does not exist.
                let edge_local = local.date().and_hms_opt(0, 0, 0).map(|m| m + Duration::seconds(i64::from(edge)));
                let edge_utc = edge_local.and_then(|e| tz.from_local_datetime(&e).earliest()).map(|e| e.to_utc());
                match edge_utc.map(|e| (e - at).num_seconds()) {
                    Some(d) if d > 0 => left.min(d as u64),
                    _ => wall,
                }
            };
            match &mut current {
                Some((cp, _, n)) if *cp == p => *n += len,
                _ => {
                    if let Some((cp, cs, n)) = current.take() {
                        part(cp, cs, n);
                    }
                    current = Some((p, at, len));
                }
            }
            left -= len;
            at += Duration::seconds(len as i64);
            if left == 0 || steps >= MAX_SPLIT_STEPS {
                break;
            }
        }
        if let Some((cp, cs, n)) = current {
            // Past MAX_SPLIT_STEPS (impossible within MAX_DURATION_SECS), the rest stays in the last part.
            part(cp, cs, n + left);
        }
    }

    /// Rates one record at its start time, consuming `buckets` (left untouched on error).
    pub fn rate(
        &self,
        rec: &UsageRecord,
        ctx: &RatingContext,
        buckets: &mut Buckets,
    ) -> Result<RatedRecord, RatingError> {
        let t = &self.tariff;
        if t.lifecycle_status == Lifecycle::InDesign {
            return Err(RatingError::TariffInDesign { tariff_id: t.id.clone() });
        }
        if !t.valid_for.contains(rec.start) {
            return Err(RatingError::TariffNotValidAt { tariff_id: t.id.clone(), at: rec.start });
        }
        if !same_text(&buckets.tariff_id, &t.id) || buckets.allowances.len() != self.allowances.len() {
            return Err(RatingError::BucketsMismatch {
                tariff_id: t.id.clone(),
                buckets_tariff_id: buckets.tariff_id.clone(),
            });
        }
        let limit = match rec.service.dimension() {
            Dimension::Time => MAX_DURATION_SECS,
            Dimension::Data => MAX_VOLUME_BYTES,
            Dimension::Events => MAX_EVENTS,
        };
        if rec.quantity > limit {
            return Err(RatingError::QuantityTooLarge { quantity: rec.quantity, limit });
        }
        let tier_units_before = buckets.tier_units;
        let mut steps = Vec::with_capacity(8);
        let result = self.rate_inner(rec, ctx, buckets, &mut steps);
        if result.is_err() {
            // Roll back what this record took: the steps say exactly that.
            for s in &steps {
                if let Step::Allowance { allowance, base_units, .. } = s
                    && let Some(Some(b)) = buckets.allowances.get_mut(usize::from(*allowance))
                {
                    b.used_base_units -= base_units;
                }
            }
            buckets.tier_units = tier_units_before;
        }
        let mut rated = result?;
        rated.steps = steps;
        Ok(rated)
    }

    fn rate_inner(
        &self,
        rec: &UsageRecord,
        ctx: &RatingContext,
        buckets: &mut Buckets,
        steps: &mut Vec<Step>,
    ) -> Result<RatedRecord, RatingError> {
        let t = &self.tariff;
        let dimension = rec.service.dimension();
        let same_dimension = t.rating_unit.dimension() == dimension;
        let service = rec.service.index();
        // A single rate is per the tariff's rating unit: it prices only what that unit measures.
        let single = |rate: Option<Money>| rate.filter(|_| same_dimension).map(|r| (r, t.rating_unit));
        let measured = rec.quantity;

        // Where: roaming zone, destination, on-net. They decide the rate and whether allowances apply.
        let mut allowances_apply = true;
        let mut zone_rate = None;
        if let Some(n) = &rec.visited_network {
            match self.roaming_zone(n) {
                Some(z) => {
                    let zone = &t.roaming_zones[z];
                    allowances_apply = zone.allowances_apply;
                    zone_rate = self.zone_rates[z][service];
                    steps.push(Step::RoamingZone { zone: self.zone_names[z].clone(), allowances_apply });
                }
                None => {
                    allowances_apply = false;
                    steps.push(Step::OutsideRoamingZones { visited_network: n.clone() });
                }
            }
        }
        let mut group_rate = None;
        if let Some((g, prefix)) = rec.called_number.as_deref().and_then(|n| self.destination(n)) {
            let group = &t.destination_groups[g];
            allowances_apply &= group.allowances_apply;
            group_rate = self.group_rates[g][service];
            steps.push(Step::Destination { group: self.group_names[g].clone(), prefix: prefix.clone() });
        }
        let on_net_rate = single(t.on_net_rate.filter(|_| rec.on_net));
        if on_net_rate.is_some() && zone_rate.is_none() {
            steps.push(Step::OnNet);
        }

        // How much: rounding applies to the whole record, in the tariff's own dimension only.
        let charged = if same_dimension { t.rounded_quantity(measured) } else { measured };
        if charged != measured
            && let Some(r) = t.rounding
        {
            steps.push(Step::Rounding {
                measured_base_units: measured,
                charged_base_units: charged,
                first_increment: r.first_increment,
                next_increment: r.next_increment,
            });
        }

        let mut acc = Acc { amount: Decimal::ZERO, allowance: 0, overage: 0, blocked: 0, error: None };
        let service_allowances = &self.by_service[rec.service.index()];
        let mut rate_part = |period: Option<usize>,
                             start: DateTime<Utc>,
                             base: u64,
                             acc: &mut Acc,
                             steps: &mut Vec<Step>| {
            if !self.periods.is_empty() {
                steps.push(Step::Part {
                    period: period.map(|p| self.periods[p].name.clone()),
                    start,
                    base_units: base,
                });
            }
            let period_rate = single(period.and_then(|p| self.periods[p].rate));
            // Precedence of Tariff::unit_rate (checked equal by a property test).
            let unit_rate = zone_rate
                .map(|r| (r, Basis::RoamingZone))
                .or_else(|| on_net_rate.map(|r| (r, Basis::OnNet)))
                .or_else(|| group_rate.map(|r| (r, Basis::DestinationGroup)))
                .or_else(|| period_rate.map(|r| (r, Basis::Period)))
                .or_else(|| single(t.rate).map(|r| (r, Basis::Base)));
            if let Some(((r, _), basis)) = unit_rate
                && r.amount.is_zero()
            {
                steps.push(Step::Free { base_units: base, basis });
                return;
            }
            let mut rest = base;
            if allowances_apply {
                for &i in service_allowances {
                    let Some(Some(b)) = buckets.allowances.get_mut(usize::from(i)) else { continue };
                    let take = rest.min(b.remaining_base_units());
                    if take == 0 {
                        continue;
                    }
                    b.used_base_units += take;
                    rest -= take;
                    steps.push(Step::Allowance {
                        allowance: i,
                        service: rec.service,
                        base_units: take,
                        remaining_base_units: b.remaining_base_units(),
                    });
                    acc.allowance += take;
                    if rest == 0 {
                        return;
                    }
                }
                if let Some(&last) = service_allowances.last()
                    && rest > 0
                {
                    let a = &self.allowances[usize::from(last)];
                    match &a.overage {
                        Overage::Charge { rate } => {
                            let Some(amount) = acc.add(rate.amount, rest, a.unit_base_units) else { return };
                            acc.overage += rest;
                            steps.push(Step::Overage { allowance: last, base_units: rest, rate: rate.amount, amount });
                        }
                        Overage::Block => {
                            acc.blocked += rest;
                            steps.push(Step::Blocked { allowance: last, base_units: rest });
                        }
                    }
                    return;
                }
            }
            if rest == 0 {
                return;
            }
            if let Some(((r, per), basis)) = unit_rate {
                let Some(amount) = acc.add(r.amount, rest, per.base_units()) else { return };
                steps.push(Step::Rate { base_units: rest, basis, rate: r.amount, rating_unit: Some(per), amount });
            } else if let (Some(tiers), true) = (&t.tiers, same_dimension) {
                let Some(units) = crate::money::mul_div(Decimal::ONE, rest, t.rating_unit.base_units()) else {
                    acc.error = Some(Refusal::Overflow);
                    return;
                };
                let before = buckets.tier_units;
                // A running total past MAX_TIER_UNITS (stored state gone wrong) is refused, not
                // multiplied into an overflow.
                let Some(after) = before.checked_add(units).filter(|a| *a <= Decimal::from(MAX_TIER_UNITS)) else {
                    acc.error = Some(Refusal::Overflow);
                    return;
                };
                let amount = match tiers.mode {
                    TierMode::Tiered => t.tier_charge(after).zip(t.tier_charge(before)).map(|(a, b)| a - b),
                    TierMode::Volume => tiers.band_at(after).map(|b| b.rate.amount * units),
                };
                match amount.map(|a| (a, acc.amount.checked_add(a))) {
                    Some((_, None)) => acc.error = Some(Refusal::Overflow),
                    Some((amount, Some(total))) => {
                        buckets.tier_units = after;
                        acc.amount = total;
                        steps.push(Step::Tier { mode: tiers.mode, units_before: before, units, amount });
                    }
                    None => acc.error = Some(Refusal::NoRate("no tier band covers the running total")),
                }
            } else {
                acc.error = Some(Refusal::NoRate(if same_dimension {
                    "the tariff has no rate, tier or allowance for it"
                } else {
                    "the tariff's rating unit measures something else and no allowance or per-service rate covers it"
                }));
            }
        };
        if dimension == Dimension::Time {
            let mut parts = 0u64;
            let mut last: Option<(Option<usize>, DateTime<Utc>, u64)> = None;
            // The rounding extra goes to the last part: hold each part until the next one comes.
            self.split(rec.start, measured, ctx.time_zone, |p, s, n| {
                if let Some((lp, ls, ln)) = last.replace((p, s, n)) {
                    rate_part(lp, ls, ln, &mut acc, steps);
                }
                parts += n;
            });
            debug_assert_eq!(parts, measured);
            if let Some((lp, ls, ln)) = last {
                rate_part(lp, ls, ln + (charged - measured), &mut acc, steps);
            }
        } else {
            let period = if self.periods.is_empty() { None } else { self.period(local_time(rec.start, ctx.time_zone)) };
            rate_part(period, rec.start, charged, &mut acc, steps);
        }
        match acc.error {
            Some(Refusal::NoRate(reason)) => return Err(RatingError::NoRate { service: rec.service, reason }),
            Some(Refusal::Overflow) => return Err(RatingError::Overflow),
            None => {}
        }

        let unrounded = Money::new(acc.amount, t.currency);
        let net = to_minor_unit(unrounded.round(ctx.rounding));
        steps.push(Step::Rounded { rule: ctx.rounding, unrounded: acc.amount, net: net.amount });
        let tax = match &ctx.tax {
            Some(tx) => {
                let tax = to_minor_unit(Money::new(tx.tax_on(net.amount), t.currency).round(ctx.rounding));
                steps.push(Step::Tax {
                    tax_rate: tx.id.clone(),
                    category: tx.category.clone(),
                    percent: tx.rate.rate,
                    amount: tax.amount,
                });
                tax
            }
            None => Money::zero(t.currency),
        };
        let gross = net.checked_add(tax).map_err(|_| RatingError::Overflow)?;
        Ok(RatedRecord {
            record_id: rec.record_id.clone(),
            tariff_id: self.id.clone(),
            tariff_version: self.version.clone(),
            service: rec.service,
            measured_base_units: measured,
            charged_base_units: charged,
            allowance_base_units: acc.allowance,
            overage_base_units: acc.overage,
            blocked_base_units: acc.blocked,
            net,
            tax,
            gross,
            steps: Vec::new(),
        })
    }
}

/// Wall-clock time of `at` in `tz`. UTC (the default context's zone) directly: chrono-tz would
/// search its table of offsets for it, once per rated record.
fn local_time(at: DateTime<Utc>, tz: chrono_tz::Tz) -> NaiveDateTime {
    if tz == chrono_tz::UTC { at.naive_utc() } else { at.with_timezone(&tz).naive_local() }
}

/// `a == b`, eight bytes at a time. Why not `==`: in wasm that calls wasi-libc's `memcmp`, a
/// byte loop paying an interrupt check per byte, and this check runs once per rated record (it
/// was 6% of the wasm kernel's time, against nothing natively).
fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or_default());
    // The last word overlaps the one before it when the length is not a multiple of 8.
    (0..n / 8).all(|i| word(a, 8 * i) == word(b, 8 * i)) && word(a, n - 8) == word(b, n - 8)
}

/// A rounded amount written with all the currency's minor digits (`0.60`, not `0.6`): only
/// trailing zeros are added, the value is unchanged.
fn to_minor_unit(m: Money) -> Money {
    let mut amount = m.amount;
    if amount.scale() != m.currency.minor_digits() {
        amount.rescale(m.currency.minor_digits());
    }
    Money { amount, ..m }
}

/// What the parts of one record add up to.
struct Acc {
    amount: Decimal,
    allowance: u64,
    overage: u64,
    blocked: u64,
    error: Option<Refusal>,
}

/// Why a part could not be rated.
enum Refusal {
    NoRate(&'static str),
    Overflow,
}

impl Acc {
    /// Adds `rate × base / unit_base` (multiplied first, so it is exact as long as it can be)
    /// and returns it; `None` (and an overflow refusal) when it does not fit a decimal.
    #[inline]
    fn add(&mut self, rate: Decimal, base: u64, unit_base: u64) -> Option<Decimal> {
        let amount = crate::money::mul_div(rate, base, unit_base);
        let total = amount.and_then(|a| crate::money::add(self.amount, a));
        match (amount, total) {
            (Some(a), Some(t)) => {
                self.amount = t;
                Some(a)
            }
            _ => {
                self.error = Some(Refusal::Overflow);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{local_time, same_text};
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;

    #[test]
    fn local_time_in_utc_is_the_time_zone_s() {
        let start: DateTime<Utc> = "1900-01-01T00:00:00Z".parse().expect("time");
        for days in (0..80_000).step_by(7) {
            let at = start + chrono::Duration::days(days) + chrono::Duration::seconds(days * 13 % 86_400);
            assert_eq!(local_time(at, chrono_tz::UTC), at.with_timezone(&chrono_tz::UTC).naive_local());
            let paris = chrono_tz::Europe::Paris;
            assert_eq!(local_time(at, paris), at.with_timezone(&paris).naive_local());
        }
    }

    #[test]
    fn same_text_at_every_length_and_position() {
        let base: String = "tariff-interconnect-2026".into();
        for n in 0..=base.len() {
            let a = &base[..n];
            assert!(same_text(a, a), "{a:?}");
            for i in 0..n {
                let mut b = a.as_bytes().to_vec();
                b[i] = b'x';
                let b = String::from_utf8(b).expect("ascii");
                assert_eq!(same_text(a, &b), a == b, "{a:?} {b:?}");
            }
            if n > 0 {
                assert!(!same_text(a, &base[..n - 1]));
            }
        }
    }

    proptest! {
        #[test]
        fn same_text_is_string_equality(a in "[a-c]{0,20}", b in "[a-c]{0,20}") {
            prop_assert_eq!(same_text(&a, &b), a == b);
        }
    }
}

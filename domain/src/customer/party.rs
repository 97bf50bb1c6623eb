//! Parties (TMF632): `Individual` and `Organization` with contact media, identifications and
//! characteristics; the erasure of a person.
//!
//! Rules:
//! - individual: `givenName` and `familyName`, or `fullName`; `birthDate` a date not in the future
//!   (checked against `today`); `status` is free except `erased`, which only [`erase_individual`]
//!   sets.
//! - organization: `name` or `tradingName`.
//! - `contactMedium[]`: `mediumType` email|phone|postalAddress with its `characteristic`
//!   (`emailAddress` shaped `local@domain.tld`; `phoneNumber` E.164-ish: an optional `+`, then 6 to
//!   15 digits, spaces, dashes, dots and parentheses allowed between them; `street1`, `city`,
//!   `postCode`, `country` for a postal address); at most one `preferred` medium per type.
//! - `individualIdentification[]` / `organizationIdentification[]`: `identificationType` and
//!   `identificationId`, optional `issuingAuthority` and `validFor`; no two with the same type and id.
//! - `partyCharacteristic[]`: `name` and `value` (any JSON); names unique.
//!
//! Erasure ([`erase_individual`]) keeps only an allow-list of non-personal attributes ([`KEPT_ON_ERASURE`]),
//! so an attribute this crate does not know about (which could be personal) is removed too; the
//! names become a stable pseudonym ([`pseudonym`]) and `status` becomes `erased`.

use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

use super::{Problem, ValidFor, check_date, check_len, check_one_of, check_opt_text, check_text, view};

/// The status an erased individual has.
pub const ERASED: &str = "erased";
/// Contact medium types.
pub const MEDIUM_TYPES: &[&str] = &["email", "phone", "postalAddress"];
/// Attributes an erased individual keeps (everything else is removed).
pub const KEPT_ON_ERASURE: &[&str] = &["id", "href", "@type", "@baseType", "@schemaLocation", "lastUpdate"];

/// The contact medium view.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactMedium {
    /// email | phone | postalAddress.
    pub medium_type: String,
    /// The preferred medium of its type.
    #[serde(default)]
    pub preferred: bool,
    /// The medium's data.
    pub characteristic: MediumCharacteristic,
    /// When it is valid.
    pub valid_for: Option<ValidFor>,
}

/// The data of a contact medium.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediumCharacteristic {
    /// For email.
    pub email_address: Option<String>,
    /// For phone.
    pub phone_number: Option<String>,
    /// For postalAddress.
    pub street1: Option<String>,
    /// Second address line.
    pub street2: Option<String>,
    /// For postalAddress.
    pub city: Option<String>,
    /// For postalAddress.
    pub post_code: Option<String>,
    /// For postalAddress.
    pub country: Option<String>,
}

/// An identification (passport, VAT number...).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identification {
    /// passport, nationalId, vatNumber...
    pub identification_type: String,
    /// The number.
    pub identification_id: String,
    /// Who issued it.
    pub issuing_authority: Option<String>,
    /// When it is valid.
    pub valid_for: Option<ValidFor>,
}

/// A characteristic `{name, value}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Characteristic {
    /// Its name.
    pub name: String,
    /// Any JSON value.
    pub value: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndividualView {
    given_name: Option<String>,
    family_name: Option<String>,
    full_name: Option<String>,
    birth_date: Option<String>,
    status: Option<String>,
    #[serde(default)]
    contact_medium: Vec<ContactMedium>,
    #[serde(default)]
    individual_identification: Vec<Identification>,
    #[serde(default)]
    party_characteristic: Vec<Characteristic>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrganizationView {
    name: Option<String>,
    trading_name: Option<String>,
    status: Option<String>,
    #[serde(default)]
    contact_medium: Vec<ContactMedium>,
    #[serde(default)]
    organization_identification: Vec<Identification>,
    #[serde(default)]
    party_characteristic: Vec<Characteristic>,
}

/// Validates an individual document (`before`: the stored one on a change). `today` bounds the
/// birth date.
pub fn validate_individual(doc: &Value, before: Option<&Value>, today: NaiveDate) -> Result<(), Problem> {
    if before.is_some_and(is_erased) {
        return Err(Problem::Conflict("this individual has been erased; it can no longer be changed".into()));
    }
    let v: IndividualView = view(doc)?;
    check_opt_text("givenName", v.given_name.as_deref())?;
    check_opt_text("familyName", v.family_name.as_deref())?;
    check_opt_text("fullName", v.full_name.as_deref())?;
    let named = v.full_name.is_some() || (v.given_name.is_some() && v.family_name.is_some());
    if !named {
        return Err(Problem::malformed(".", "an individual needs givenName and familyName, or fullName"));
    }
    if let Some(b) = &v.birth_date
        && check_date("birthDate", b)? > today
    {
        return Err(Problem::invalid("birthDate", "must not be in the future"));
    }
    check_status(v.status.as_deref())?;
    check_contact_media(&v.contact_medium)?;
    check_identifications("individualIdentification", &v.individual_identification)?;
    check_characteristics(&v.party_characteristic)
}

/// Validates an organization document.
pub fn validate_organization(doc: &Value) -> Result<(), Problem> {
    let v: OrganizationView = view(doc)?;
    check_opt_text("name", v.name.as_deref())?;
    check_opt_text("tradingName", v.trading_name.as_deref())?;
    if v.name.is_none() && v.trading_name.is_none() {
        return Err(Problem::malformed(".", "an organization needs name or tradingName"));
    }
    check_opt_text("status", v.status.as_deref())?;
    check_contact_media(&v.contact_medium)?;
    check_identifications("organizationIdentification", &v.organization_identification)?;
    check_characteristics(&v.party_characteristic)
}

fn check_status(status: Option<&str>) -> Result<(), Problem> {
    check_opt_text("status", status)?;
    if status == Some(ERASED) {
        return Err(Problem::invalid("status", "erased is set only by the erase operation (POST .../erase)"));
    }
    Ok(())
}

/// Whether a stored individual has been erased.
pub fn is_erased(doc: &Value) -> bool {
    doc.get("status").and_then(Value::as_str) == Some(ERASED)
}

/// Checks the contact media (see the module doc).
pub fn check_contact_media(media: &[ContactMedium]) -> Result<(), Problem> {
    check_len("contactMedium", media)?;
    let mut preferred = BTreeSet::new();
    for (i, m) in media.iter().enumerate() {
        let at = |f: &str| format!("contactMedium[{i}].{f}");
        check_one_of(&at("mediumType"), &m.medium_type, MEDIUM_TYPES)?;
        let c = &m.characteristic;
        match m.medium_type.as_str() {
            "email" => {
                let e = c.email_address.as_deref().ok_or_else(|| {
                    Problem::malformed(at("characteristic"), "missing field `emailAddress` for an email medium")
                })?;
                if !is_email(e) {
                    return Err(Problem::invalid(
                        at("characteristic.emailAddress"),
                        format!("{e:?} is not an e-mail address"),
                    ));
                }
            }
            "phone" => {
                let p = c.phone_number.as_deref().ok_or_else(|| {
                    Problem::malformed(at("characteristic"), "missing field `phoneNumber` for a phone medium")
                })?;
                if !is_phone(p) {
                    return Err(Problem::invalid(
                        at("characteristic.phoneNumber"),
                        format!("{p:?} is not a phone number (E.164: +, then 6 to 15 digits)"),
                    ));
                }
            }
            _ => {
                for (name, value) in
                    [("street1", &c.street1), ("city", &c.city), ("postCode", &c.post_code), ("country", &c.country)]
                {
                    let value = value.as_deref().ok_or_else(|| {
                        Problem::malformed(at("characteristic"), format!("missing field `{name}` for a postal address"))
                    })?;
                    check_text(&at(&format!("characteristic.{name}")), value)?;
                }
                check_opt_text(&at("characteristic.street2"), c.street2.as_deref())?;
            }
        }
        if let Some(vf) = &m.valid_for {
            vf.check(&at("validFor"))?;
        }
        if m.preferred && !preferred.insert(m.medium_type.as_str()) {
            return Err(Problem::invalid(
                at("preferred"),
                format!("only one {} contact medium can be preferred", m.medium_type),
            ));
        }
    }
    Ok(())
}

/// Checks identifications: mandatory type and id, unique (type, id) pairs.
pub fn check_identifications(field: &str, ids: &[Identification]) -> Result<(), Problem> {
    check_len(field, ids)?;
    let mut seen = BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let at = |f: &str| format!("{field}[{i}].{f}");
        check_text(&at("identificationType"), &id.identification_type)?;
        check_text(&at("identificationId"), &id.identification_id)?;
        check_opt_text(&at("issuingAuthority"), id.issuing_authority.as_deref())?;
        if let Some(vf) = &id.valid_for {
            vf.check(&at("validFor"))?;
        }
        if !seen.insert((id.identification_type.as_str(), id.identification_id.as_str())) {
            return Err(Problem::invalid(
                field,
                format!("{} {} is given twice", id.identification_type, id.identification_id),
            ));
        }
    }
    Ok(())
}

/// Checks characteristics: a name each, names unique.
pub fn check_characteristics(chars: &[Characteristic]) -> Result<(), Problem> {
    check_len("partyCharacteristic", chars)?;
    let mut seen = BTreeSet::new();
    for (i, c) in chars.iter().enumerate() {
        check_text(&format!("partyCharacteristic[{i}].name"), &c.name)?;
        if !seen.insert(c.name.as_str()) {
            return Err(Problem::invalid(
                "partyCharacteristic",
                format!("the characteristic {} is given twice", c.name),
            ));
        }
    }
    Ok(())
}

/// `local@domain.tld`: no spaces, one `@`, a dot in the domain, at most 254 characters.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    s.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'))
}

/// E.164-ish: optional leading `+`, then 6 to 15 digits; spaces, `-`, `.` and parentheses allowed
/// between digits.
pub fn is_phone(s: &str) -> bool {
    let rest = s.trim().strip_prefix('+').unwrap_or(s.trim());
    let mut digits = 0;
    for c in rest.chars() {
        match c {
            '0'..='9' => digits += 1,
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return false,
        }
    }
    (6..=15).contains(&digits) && rest.starts_with(|c: char| c.is_ascii_digit() || c == '(')
}

/// The stable pseudonym of a party id: `erased-` and 12 hex digits of its FNV-1a hash. The same
/// id always gives the same pseudonym; nothing personal goes into it.
pub fn pseudonym(party_id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in party_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("erased-{:012x}", h & 0xffff_ffff_ffff)
}

/// The erased document of an individual and the attributes removed or replaced (sorted).
/// Refused (409) if it is already erased.
pub fn erase_individual(doc: &Value) -> Result<(Value, Vec<String>), Problem> {
    if is_erased(doc) {
        return Err(Problem::Conflict("this individual has already been erased".into()));
    }
    let Value::Object(map) = doc else {
        return Err(Problem::malformed(".", "a stored individual must be an object"));
    };
    let id = map.get("id").and_then(Value::as_str).unwrap_or_default();
    let name = pseudonym(id);
    let mut out = Map::new();
    let mut erased = Vec::new();
    for (k, v) in map {
        if KEPT_ON_ERASURE.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        } else if k != "status" {
            erased.push(k.clone());
        }
    }
    out.insert("givenName".into(), json!("erased"));
    out.insert("familyName".into(), json!(name));
    out.insert("fullName".into(), json!(name));
    out.insert("status".into(), json!(ERASED));
    erased.sort();
    Ok((Value::Object(out), erased))
}

/// `doc` with the `name` of every reference to `party_id` under `attributes` (a reference object
/// or an array of them, e.g. `engagedParty`, `relatedParty`) replaced by `pseudonym`, so that no
/// document that points at an erased person still carries the person's name.
pub fn pseudonymise_refs(doc: &Value, party_id: &str, pseudonym: &str, attributes: &[&str]) -> Value {
    let mut out = doc.clone();
    let rename = |r: &mut Value| {
        if r.get("id").and_then(Value::as_str) == Some(party_id)
            && let Some(name) = r.get_mut("name")
        {
            *name = json!(pseudonym);
        }
    };
    for a in attributes {
        match out.get_mut(*a) {
            Some(Value::Array(items)) => items.iter_mut().for_each(rename),
            Some(r @ Value::Object(_)) => rename(r),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()
    }

    fn person() -> Value {
        json!({
            "id": "p1", "href": "/x/p1", "@type": "Individual", "givenName": "Ada", "familyName": "Lovelace",
            "birthDate": "1815-12-10", "nationality": "GB",
            "contactMedium": [
                {"mediumType": "email", "preferred": true, "characteristic": {"emailAddress": "ada@example.org"}},
                {"mediumType": "phone", "characteristic": {"phoneNumber": "+44 20 7946 0958"}},
                {"mediumType": "postalAddress", "characteristic": {"street1": "1 St James's Sq", "city": "London", "postCode": "SW1Y 4JH", "country": "GB"}}
            ],
            "individualIdentification": [{"identificationType": "passport", "identificationId": "123456789"}],
            "partyCharacteristic": [{"name": "segment", "value": "gold"}]
        })
    }

    fn problem(doc: Value) -> Problem {
        validate_individual(&doc, None, today()).unwrap_err()
    }

    #[test]
    fn a_complete_individual_is_valid() {
        validate_individual(&person(), None, today()).unwrap();
        validate_individual(&json!({"fullName": "Ada L."}), None, today()).unwrap();
    }

    #[test]
    fn individual_rules_name_the_field() {
        let p = problem(json!({"givenName": "Ada"}));
        assert_eq!(p.status(), 400);
        assert!(p.to_string().contains("givenName and familyName, or fullName"));
        let p = problem(json!({"givenName": 5, "familyName": "L"}));
        assert_eq!((p.status(), p.field()), (400, Some("givenName")));
        let mut d = person();
        d["contactMedium"][0]["characteristic"]["emailAddress"] = json!("not-an-email");
        assert_eq!(problem(d).field(), Some("contactMedium[0].characteristic.emailAddress"));
        let mut d = person();
        d["contactMedium"][1]["characteristic"]["phoneNumber"] = json!("12ab");
        assert_eq!(problem(d).status(), 422);
        let mut d = person();
        d["contactMedium"][2]["characteristic"] = json!({"street1": "x", "city": "y", "country": "GB"});
        assert!(problem(d).to_string().contains("postCode"));
        let mut d = person();
        d["contactMedium"][1]["preferred"] = json!(true);
        d["contactMedium"][1]["mediumType"] = json!("email");
        d["contactMedium"][1]["characteristic"] = json!({"emailAddress": "b@example.org"});
        assert!(problem(d).to_string().contains("only one email"));
        let mut d = person();
        d["contactMedium"][0]["mediumType"] = json!("fax");
        assert_eq!(problem(d).field(), Some("contactMedium[0].mediumType"));
        let mut d = person();
        d["birthDate"] = json!("2030-01-01");
        assert_eq!(problem(d).field(), Some("birthDate"));
        let mut d = person();
        d["individualIdentification"][0].as_object_mut().unwrap().remove("identificationId");
        assert_eq!(problem(d).status(), 400);
        let mut d = person();
        d["partyCharacteristic"] = json!([{"name": "a", "value": 1}, {"name": "a", "value": 2}]);
        assert_eq!(problem(d).status(), 422);
        let mut d = person();
        d["status"] = json!("erased");
        assert_eq!(problem(d).field(), Some("status"));
        let mut d = person();
        d["contactMedium"] = json!({"mediumType": "email"});
        assert_eq!(problem(d).status(), 400);
    }

    #[test]
    fn organization_rules() {
        validate_organization(&json!({"name": "ACME", "organizationIdentification": [{"identificationType": "vat", "identificationId": "FR1"}]})).unwrap();
        validate_organization(&json!({"tradingName": "ACME"})).unwrap();
        assert_eq!(validate_organization(&json!({"status": "x"})).unwrap_err().status(), 400);
        assert_eq!(validate_organization(&json!({"name": ""})).unwrap_err().status(), 422);
    }

    #[test]
    fn emails_and_phones() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in ["", "a", "a@b", "@b.co", "a@b..co", "a b@c.de", "a@b@c.de", "a@-b.co"] {
            assert!(!is_email(bad), "{bad}");
        }
        for ok in ["+33612345678", "+1 (555) 123-4567", "0612345678", "+44 20 7946 0958"] {
            assert!(is_phone(ok), "{ok}");
        }
        for bad in ["", "+", "12345", "+1234567890123456", "+33 6x", "-123456789", "phone"] {
            assert!(!is_phone(bad), "{bad}");
        }
    }

    #[test]
    fn references_lose_the_name() {
        let doc = json!({"name": "Main", "engagedParty": {"id": "p1", "name": "Ada"},
                         "relatedParty": [{"id": "p1", "name": "Ada", "role": "owner"}, {"id": "p2", "name": "Bob"}, {"id": "p1"}]});
        let out = pseudonymise_refs(&doc, "p1", "erased-x", &["engagedParty", "relatedParty"]);
        assert_eq!(out["engagedParty"], json!({"id": "p1", "name": "erased-x"}));
        assert_eq!(
            out["relatedParty"],
            json!([{"id": "p1", "name": "erased-x", "role": "owner"}, {"id": "p2", "name": "Bob"}, {"id": "p1"}])
        );
        assert_eq!(out["name"], "Main");
        assert_eq!(pseudonymise_refs(&doc, "p9", "e", &["relatedParty"]), doc);
    }

    #[test]
    fn erasure_keeps_only_non_personal_attributes() {
        let (erased, attrs) = erase_individual(&person()).unwrap();
        assert_eq!(erased["id"], "p1");
        assert_eq!(erased["status"], ERASED);
        assert_eq!(erased["fullName"], pseudonym("p1"));
        assert!(pseudonym("p1").starts_with("erased-") && pseudonym("p1").len() == 19);
        assert_eq!(pseudonym("p1"), pseudonym("p1"));
        assert_ne!(pseudonym("p1"), pseudonym("p2"));
        let text = erased.to_string();
        for personal in ["Ada", "Lovelace", "1815", "ada@example.org", "7946", "London", "123456789", "GB", "gold"] {
            assert!(!text.contains(personal), "{personal} left in {text}");
        }
        assert_eq!(
            attrs,
            [
                "birthDate",
                "contactMedium",
                "familyName",
                "givenName",
                "individualIdentification",
                "nationality",
                "partyCharacteristic"
            ]
        );
        // The erased document is itself a valid individual, and cannot be erased or changed again.
        validate_individual(&erased, None, today()).unwrap_err(); // status erased is refused from clients
        assert_eq!(erase_individual(&erased).unwrap_err().status(), 409);
        assert_eq!(validate_individual(&person(), Some(&erased), today()).unwrap_err().status(), 409);
    }
}

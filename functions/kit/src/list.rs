//! TMF630 list handling: paging, field selection, attribute filters and sorting, applied in memory
//! to the JSON representations of a collection.
//!
//! Query parameters ([`ListQuery::parse`]):
//! - `offset` (default 0) and `limit` (default [`DEFAULT_LIMIT`] = 100, at most [`MAX_LIMIT`] =
//!   1000; `limit=0` only counts). Anything but a non-negative integer, a limit over the maximum,
//!   or a repeated `offset`/`limit`/`fields`/`sort` is a 400.
//! - `fields=a,b.c`: keep only these attributes (dotted paths select nested members); `id`, `href`
//!   and `@type` are always kept; `fields=none` keeps only those.
//! - `sort=a,-b`: ascending by `a`, then descending by `b`; items without the attribute come last.
//!   Without `sort` the collection's own order (key order) is kept.
//! - Every other parameter is an attribute filter, all of them ANDed:
//!   - `attr=v` equality; `attr=v1,v2` means `v1` OR `v2`; `attr.eq=v` is the same. A value in
//!     double quotes (`attr="v1,v2"`) is one literal value: quotes removed, no comma split.
//!   - `attr.ne=v` (or `attr!=v`): not equal; a comma list means none of them; an absent attribute
//!     is "not equal".
//!   - `attr.gt`, `attr.gte`, `attr.lt`, `attr.lte` (or `attr>v`, `attr>=v`, `attr<v`, `attr<=v`):
//!     ordering; a comma list matches if any value does.
//!   - `attr` is a dotted path into nested objects (`relatedParty.role=Owner`); an array on the path
//!     matches if any of its elements does.
//!   - Comparison follows the JSON type of the stored value: numbers numerically, booleans as
//!     `true`/`false`, `null` as `null`, strings exactly for (in)equality and, for ordering,
//!     numerically when both sides are numbers and by bytes otherwise (so RFC 3339 UTC times
//!     order correctly).
//!
//! The answer ([`ListPage::into_reply`]) is 200 with a JSON array and the headers `X-Total-Count`
//! (items matching the filters) and `X-Result-Count` (items in this page).

use serde_json::{Map, Value};
use std::cmp::Ordering;

use crate::error::ApiError;
use crate::http::Reply;

/// Page size when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest accepted `limit`.
pub const MAX_LIMIT: usize = 1000;
/// Query parameters that are not attribute filters.
pub const RESERVED: &[&str] = &["offset", "limit", "fields", "sort"];
/// Attributes that `fields` always keeps.
pub const ALWAYS_KEPT: &[&str] = &["id", "href", "@type"];

/// A filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `attr=v`, `attr.eq=v`
    Eq,
    /// `attr.ne=v`, `attr!=v`
    Ne,
    /// `attr.gt=v`, `attr>v`
    Gt,
    /// `attr.gte=v`, `attr>=v`
    Gte,
    /// `attr.lt=v`, `attr<v`
    Lt,
    /// `attr.lte=v`, `attr<=v`
    Lte,
}

impl Op {
    fn from_suffix(s: &str) -> Option<Self> {
        Some(match s {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            _ => return None,
        })
    }
}

/// One attribute filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Dotted path, split.
    pub path: Vec<String>,
    /// Operator.
    pub op: Op,
    /// Values (a comma list, split).
    pub values: Vec<String>,
}

/// One sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// Dotted path, split.
    pub path: Vec<String>,
    /// `-attr`.
    pub descending: bool,
}

/// A parsed list request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Items to skip.
    pub offset: usize,
    /// Items to return at most.
    pub limit: usize,
    /// `None`: all fields; `Some(paths)`: only these (plus [`ALWAYS_KEPT`]).
    pub fields: Option<Vec<Vec<String>>>,
    /// Attribute filters, ANDed.
    pub filters: Vec<Filter>,
    /// Sort keys, most significant first.
    pub sort: Vec<SortKey>,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self { offset: 0, limit: DEFAULT_LIMIT, fields: None, filters: Vec::new(), sort: Vec::new() }
    }
}

/// One page of a filtered list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    /// The items of the page (projected by `fields`).
    pub items: Vec<Value>,
    /// Items matching the filters, before paging.
    pub total: usize,
}

impl ListPage {
    /// 200 with the items and the `X-Total-Count`/`X-Result-Count` headers.
    pub fn into_reply(self) -> Result<Reply, ApiError> {
        let count = self.items.len();
        Ok(Reply::json(200, &self.items)?
            .with_header("x-total-count", self.total.to_string())
            .with_header("x-result-count", count.to_string()))
    }
}

fn split_path(attr: &str, what: &str) -> Result<Vec<String>, ApiError> {
    let path: Vec<String> = attr.split('.').map(str::to_string).collect();
    if path.iter().any(String::is_empty) {
        return Err(ApiError::bad_request(format!("{what} {attr:?} is not a valid attribute path")));
    }
    Ok(path)
}

fn parse_count(name: &str, value: &str) -> Result<usize, ApiError> {
    value
        .parse::<usize>()
        .map_err(|_| ApiError::bad_request(format!("{name} must be a non-negative integer, not {value:?}")))
}

impl ListQuery {
    /// Parses a raw (percent-encoded) query string.
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        Self::parse_with(query, &[])
    }

    /// Like [`ListQuery::parse`], leaving the parameters in `ignore` to the caller (not filters).
    pub fn parse_with(query: &str, ignore: &[&str]) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        Self::from_pairs(&pairs, ignore)
    }

    /// Builds the query from decoded parameters.
    pub fn from_pairs(pairs: &[(String, String)], ignore: &[&str]) -> Result<Self, ApiError> {
        let mut q = ListQuery::default();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            if ignore.contains(&key.as_str()) {
                continue;
            }
            if let Some(reserved) = RESERVED.iter().find(|r| **r == key) {
                if seen.contains(reserved) {
                    return Err(ApiError::bad_request(format!("{key} is given more than once")));
                }
                seen.push(reserved);
            }
            match key.as_str() {
                "offset" => q.offset = parse_count("offset", value)?,
                "limit" => {
                    q.limit = parse_count("limit", value)?;
                    if q.limit > MAX_LIMIT {
                        return Err(ApiError::bad_request(format!("limit must be at most {MAX_LIMIT}, not {value}")));
                    }
                }
                "fields" => {
                    let value = value.trim();
                    if value.is_empty() {
                        return Err(ApiError::bad_request("fields must name at least one attribute (or none)"));
                    }
                    q.fields = Some(if value == "none" {
                        Vec::new()
                    } else {
                        value.split(',').map(|f| split_path(f.trim(), "field")).collect::<Result<_, _>>()?
                    });
                }
                "sort" => {
                    for s in value.split(',') {
                        let s = s.trim();
                        let (attr, descending) = match s.strip_prefix('-') {
                            Some(a) => (a, true),
                            None => (s.strip_prefix('+').unwrap_or(s), false),
                        };
                        q.sort.push(SortKey { path: split_path(attr, "sort attribute")?, descending });
                    }
                }
                _ => q.filters.push(parse_filter(key, value)?),
            }
        }
        Ok(q)
    }

    /// Filters, sorts, pages and projects `items`.
    pub fn apply(&self, items: Vec<Value>) -> ListPage {
        let mut matched: Vec<Value> =
            items.into_iter().filter(|item| self.filters.iter().all(|f| f.matches(item))).collect();
        if !self.sort.is_empty() {
            matched.sort_by(|a, b| {
                for key in &self.sort {
                    let ord = compare_for_sort(first_leaf(a, &key.path), first_leaf(b, &key.path), key.descending);
                    if ord != Ordering::Equal {
                        return ord;
                    }
                }
                Ordering::Equal
            });
        }
        let total = matched.len();
        let items = matched.into_iter().skip(self.offset).take(self.limit).map(|item| self.project(item)).collect();
        ListPage { items, total }
    }

    /// Applies `fields` to one item.
    pub fn project(&self, item: Value) -> Value {
        let (Some(fields), Value::Object(src)) = (&self.fields, &item) else {
            return item;
        };
        let mut out = Map::new();
        for k in ALWAYS_KEPT {
            if let Some(v) = src.get(*k) {
                out.insert((*k).to_string(), v.clone());
            }
        }
        for path in fields {
            copy_path(src, &mut out, path);
        }
        Value::Object(out)
    }
}

fn copy_path(src: &Map<String, Value>, dst: &mut Map<String, Value>, path: &[String]) {
    let Some((head, rest)) = path.split_first() else { return };
    let Some(v) = src.get(head) else { return };
    match v {
        Value::Object(child_src) if !rest.is_empty() => {
            let child = dst.entry(head.clone()).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(child_dst) = child {
                copy_path(child_src, child_dst, rest);
            }
        }
        _ => {
            dst.insert(head.clone(), v.clone());
        }
    }
}

fn parse_filter(key: &str, value: &str) -> Result<Filter, ApiError> {
    // `a>=v`, `a<=v`, `a!=v` arrive as key `a>`/`a<`/`a!` with value `v`.
    let (attr, op, value) = if let Some(a) = key.strip_suffix(">") {
        (a, Op::Gte, value)
    } else if let Some(a) = key.strip_suffix("<") {
        (a, Op::Lte, value)
    } else if let Some(a) = key.strip_suffix("!") {
        (a, Op::Ne, value)
    } else if let (Some(i), true) = (key.find(['>', '<']), value.is_empty()) {
        // `a>v` / `a<v` arrive as key `a>v` with an empty value.
        let op = if key.as_bytes()[i] == b'>' { Op::Gt } else { Op::Lt };
        (&key[..i], op, &key[i + 1..])
    } else {
        match key.rsplit_once('.').and_then(|(a, s)| Op::from_suffix(s).map(|op| (a, op))) {
            Some((a, op)) => (a, op, value),
            None => (key, Op::Eq, value),
        }
    };
    Ok(Filter { path: split_path(attr, "filter attribute")?, op, values: filter_values(value) })
}

/// The values of a filter: a comma list, or one literal value in double quotes (`"a,b"`; the TMF
/// conformance kits quote times this way).
fn filter_values(value: &str) -> Vec<String> {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(literal) if value.len() >= 2 => vec![literal.to_string()],
        _ => value.split(',').map(str::to_string).collect(),
    }
}

/// The values at `path` in `v`, descending into arrays on the way (and flattening a final array).
fn leaves<'a>(v: &'a Value, path: &[String], out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| leaves(i, path, out)),
        _ => match path.split_first() {
            None => out.push(v),
            Some((head, rest)) => {
                if let Some(child) = v.get(head) {
                    leaves(child, rest, out);
                }
            }
        },
    }
}

fn first_leaf<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut out = Vec::new();
    leaves(v, path, &mut out);
    out.into_iter().next()
}

fn as_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

fn equals(leaf: &Value, s: &str) -> bool {
    match leaf {
        Value::String(x) => x == s,
        Value::Number(n) => matches!((n.as_f64(), as_number(s)), (Some(a), Some(b)) if a == b),
        Value::Bool(b) => s.parse::<bool>().is_ok_and(|x| x == *b),
        Value::Null => s == "null",
        _ => false,
    }
}

fn order(leaf: &Value, s: &str) -> Option<Ordering> {
    match leaf {
        Value::Number(n) => n.as_f64()?.partial_cmp(&as_number(s)?),
        Value::String(x) => match (as_number(x), as_number(s)) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => Some(x.as_str().cmp(s)),
        },
        Value::Bool(b) => Some(b.cmp(&s.parse::<bool>().ok()?)),
        _ => None,
    }
}

impl Filter {
    /// Whether `item` passes this filter.
    pub fn matches(&self, item: &Value) -> bool {
        let mut found = Vec::new();
        leaves(item, &self.path, &mut found);
        let any =
            |pred: &dyn Fn(&Value, &str) -> bool| found.iter().any(|leaf| self.values.iter().any(|v| pred(leaf, v)));
        match self.op {
            Op::Eq => any(&equals),
            Op::Ne => !any(&equals),
            Op::Gt => any(&|l, v| order(l, v) == Some(Ordering::Greater)),
            Op::Gte => any(&|l, v| matches!(order(l, v), Some(Ordering::Greater | Ordering::Equal))),
            Op::Lt => any(&|l, v| order(l, v) == Some(Ordering::Less)),
            Op::Lte => any(&|l, v| matches!(order(l, v), Some(Ordering::Less | Ordering::Equal))),
        }
    }
}

fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => match (as_number(x), as_number(y)) {
            (Some(p), Some(q)) => p.partial_cmp(&q).unwrap_or(Ordering::Equal),
            _ => x.cmp(y),
        },
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

/// Missing values sort last in both directions.
fn compare_for_sort(a: Option<&Value>, b: Option<&Value>, descending: bool) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => {
            let o = compare_values(x, y);
            if descending { o.reverse() } else { o }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn items() -> Vec<Value> {
        vec![
            json!({"id": "1", "href": "/n/1", "@type": "Note", "name": "alpha", "price": 10, "active": true,
                   "createdAt": "2024-01-01T00:00:00Z", "amount": "9.50",
                   "owner": {"name": "ann", "age": 30}, "tags": ["red", "blue"],
                   "relatedParty": [{"role": "Owner", "name": "x"}, {"role": "Payer", "name": "y"}]}),
            json!({"id": "2", "href": "/n/2", "@type": "Note", "name": "beta", "price": 2.5, "active": false,
                   "createdAt": "2024-03-01T00:00:00Z", "amount": "10.25",
                   "owner": {"name": "bob", "age": 40}, "tags": ["green"],
                   "relatedParty": [{"role": "Payer", "name": "z"}]}),
            json!({"id": "3", "href": "/n/3", "@type": "Note", "name": "gamma", "price": 100, "active": true,
                   "createdAt": "2024-02-01T00:00:00Z", "owner": null}),
        ]
    }

    fn ids(q: &str) -> Vec<String> {
        let page = ListQuery::parse(q).unwrap().apply(items());
        page.items.iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
    }

    fn bad(q: &str) -> ApiError {
        ListQuery::parse(q).unwrap_err()
    }

    #[test]
    fn defaults() {
        let q = ListQuery::parse("").unwrap();
        assert_eq!(q, ListQuery::default());
        assert_eq!(q.limit, DEFAULT_LIMIT);
        assert_eq!(ids(""), ["1", "2", "3"]);
    }

    #[test]
    fn quoted_values_are_literal() {
        assert_eq!(ids("createdAt=%222024-02-01T00:00:00Z%22"), ["3"]);
        assert_eq!(ids("name=%22alpha,beta%22"), Vec::<String>::new());
        assert_eq!(ids("name=alpha,beta"), ["1", "2"]);
        assert_eq!(ids("name=%22"), Vec::<String>::new());
    }

    #[test]
    fn paging_and_counts() {
        let page = ListQuery::parse("offset=1&limit=1").unwrap().apply(items());
        assert_eq!(page.total, 3);
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.items[0]["id"], "2");
        let reply = page.into_reply().unwrap();
        assert_eq!(reply.header("x-total-count"), Some("3"));
        assert_eq!(reply.header("x-result-count"), Some("1"));
        assert_eq!(ids("offset=5"), Vec::<String>::new());
        assert_eq!(ids("limit=0"), Vec::<String>::new());
        assert_eq!(ListQuery::parse("limit=0&active=true").unwrap().apply(items()).total, 2);
        assert_eq!(ListQuery::parse("limit=1000").unwrap().limit, 1000);
    }

    #[test]
    fn bad_paging_is_400() {
        for q in ["limit=-1", "limit=abc", "limit=", "offset=1.5", "limit=1001", "offset=-3", "limit=1&limit=2"] {
            assert_eq!(bad(q).status, 400, "{q}");
        }
        assert!(bad("limit=5000").message.contains("1000"));
        assert!(bad("offset=x").message.contains("offset"));
        assert_eq!(bad("fields=").status, 400);
        assert_eq!(bad("fields=a..b").status, 400);
        assert_eq!(bad(".gt=3").status, 400);
        assert_eq!(bad("sort=-").status, 400);
    }

    #[test]
    fn equality_filters() {
        assert_eq!(ids("name=beta"), ["2"]);
        assert_eq!(ids("name=beta,gamma"), ["2", "3"]);
        assert_eq!(ids("name.eq=alpha"), ["1"]);
        assert_eq!(ids("price=10"), ["1"]);
        assert_eq!(ids("price=2.5"), ["2"]);
        assert_eq!(ids("active=true"), ["1", "3"]);
        assert_eq!(ids("active=false"), ["2"]);
        assert_eq!(ids("owner=null"), ["3"]);
        assert_eq!(ids("name=nope"), Vec::<String>::new());
        assert_eq!(ids("unknown=x"), Vec::<String>::new());
        // Filters are ANDed.
        assert_eq!(ids("active=true&price=100"), ["3"]);
        // Strings are compared exactly, not numerically.
        assert_eq!(ids("amount=9.5"), Vec::<String>::new());
        assert_eq!(ids("amount=9.50"), ["1"]);
        // Percent-encoded values.
        assert_eq!(ids("createdAt=2024-03-01T00%3A00%3A00Z"), ["2"]);
    }

    #[test]
    fn nested_and_array_filters() {
        assert_eq!(ids("owner.name=bob"), ["2"]);
        assert_eq!(ids("owner.age.gte=30"), ["1", "2"]);
        assert_eq!(ids("tags=blue"), ["1"]);
        assert_eq!(ids("relatedParty.role=Payer"), ["1", "2"]);
        assert_eq!(ids("relatedParty.role=Owner"), ["1"]);
        assert_eq!(ids("relatedParty.name=z"), ["2"]);
    }

    #[test]
    fn operators() {
        assert_eq!(ids("price.gt=10"), ["3"]);
        assert_eq!(ids("price.gte=10"), ["1", "3"]);
        assert_eq!(ids("price.lt=10"), ["2"]);
        assert_eq!(ids("price.lte=10"), ["1", "2"]);
        assert_eq!(ids("price.ne=10"), ["2", "3"]);
        assert_eq!(ids("name.ne=alpha,beta"), ["3"]);
        // An absent attribute is "not equal".
        assert_eq!(ids("amount.ne=9.50"), ["2", "3"]);
        // Numeric strings order numerically, other strings by bytes (RFC 3339 times).
        assert_eq!(ids("amount.gt=9.6"), ["2"]);
        assert_eq!(ids("createdAt.gt=2024-01-15T00:00:00Z"), ["2", "3"]);
        assert_eq!(ids("createdAt.lt=2024-02-01T00:00:00Z"), ["1"]);
        assert_eq!(ids("name.gte=beta"), ["2", "3"]);
        // Symbolic forms.
        assert_eq!(ids("price>10"), ["3"]);
        assert_eq!(ids("price>=10"), ["1", "3"]);
        assert_eq!(ids("price<10"), ["2"]);
        assert_eq!(ids("price<=10"), ["1", "2"]);
        assert_eq!(ids("price!=10"), ["2", "3"]);
        assert_eq!(ids("price%3E10"), ["3"]);
        // A non-number against a number never orders.
        assert_eq!(ids("price.gt=abc"), Vec::<String>::new());
    }

    #[test]
    fn fields_projection() {
        let page = ListQuery::parse("fields=name,owner.name&limit=1").unwrap().apply(items());
        assert_eq!(
            page.items[0],
            json!({"id": "1", "href": "/n/1", "@type": "Note", "name": "alpha", "owner": {"name": "ann"}})
        );
        let page = ListQuery::parse("fields=none&limit=1").unwrap().apply(items());
        assert_eq!(page.items[0], json!({"id": "1", "href": "/n/1", "@type": "Note"}));
        let page = ListQuery::parse("fields=owner.name,owner&limit=1").unwrap().apply(items());
        assert_eq!(page.items[0]["owner"], json!({"name": "ann", "age": 30}));
        // A path through a non-object keeps the value found.
        let page = ListQuery::parse("fields=tags.x&limit=1").unwrap().apply(items());
        assert_eq!(page.items[0]["tags"], json!(["red", "blue"]));
        // Filtering still sees the full item.
        assert_eq!(
            ListQuery::parse("fields=id&name=beta").unwrap().apply(items()).items,
            vec![json!({"id": "2", "href": "/n/2", "@type": "Note"})]
        );
    }

    #[test]
    fn sorting() {
        assert_eq!(ids("sort=price"), ["2", "1", "3"]);
        assert_eq!(ids("sort=-price"), ["3", "1", "2"]);
        assert_eq!(ids("sort=createdAt"), ["1", "3", "2"]);
        assert_eq!(ids("sort=-active,name"), ["1", "3", "2"]);
        // Missing values come last either way.
        assert_eq!(ids("sort=amount"), ["1", "2", "3"]);
        assert_eq!(ids("sort=-amount"), ["2", "1", "3"]);
        assert_eq!(ids("sort=-price&limit=1&offset=1"), ["1"]);
    }

    #[test]
    fn ignored_parameters_are_not_filters() {
        let q = ListQuery::parse_with("depth=2&name=x", &["depth"]).unwrap();
        assert_eq!(q.filters.len(), 1);
    }
}

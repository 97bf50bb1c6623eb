//! Account hierarchies: forests of accounts of one type, linked by `parentAccount`.
//!
//! - Any depth up to [`MAX_DEPTH`] accounts from a root to a leaf; a subtree read or moved holds at
//!   most [`MAX_SUBTREE`] accounts.
//! - A move ([`Forest::move_to`]) re-parents a whole subtree in one step; it is refused — and the
//!   forest left unchanged — when the new parent is unknown, when it lies inside the moved subtree
//!   (the cycle is named: `moving A under C would make a cycle: C → B → A`), or when the result
//!   would be deeper than [`MAX_DEPTH`].
//! - Bill roll-up: an account with `billRollUp: true` has its charges billed to its parent; the
//!   paying account ([`Forest::payer_of`]) of any account is its nearest ancestor-or-self with
//!   `billRollUp: false`, and a root always pays for itself (there is nothing to roll up to).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Most accounts on a path from a root to a leaf.
pub const MAX_DEPTH: usize = 64;
/// Most accounts in a subtree that is read or moved.
pub const MAX_SUBTREE: usize = 10_000;

/// One account of a forest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `parentAccount.id`.
    pub parent: Option<String>,
    /// `billRollUp`.
    pub bill_roll_up: bool,
}

/// Why a hierarchy operation is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HierarchyError {
    /// No such account in the forest.
    Unknown(String),
    /// The move would close a loop; `chain` runs from the new parent up to the moved account.
    Cycle {
        /// The moved account.
        moving: String,
        /// The new parent.
        under: String,
        /// New parent, its parent, ..., the moved account.
        chain: Vec<String>,
    },
    /// The result would be deeper than [`MAX_DEPTH`].
    TooDeep {
        /// The depth it would have.
        depth: usize,
    },
    /// A subtree larger than [`MAX_SUBTREE`].
    TooLarge {
        /// Its root.
        root: String,
    },
    /// The stored forest already has a loop or a dangling parent (never written by this code).
    Broken(String),
}

impl fmt::Display for HierarchyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HierarchyError::Unknown(id) => write!(f, "account {id} does not exist"),
            HierarchyError::Cycle { moving, under, chain } => {
                let shown = if chain.len() == 1 { format!("{0} → {0}", chain[0]) } else { chain.join(" → ") };
                write!(f, "moving {moving} under {under} would make a cycle: {shown}")
            }
            HierarchyError::TooDeep { depth } => {
                write!(f, "the hierarchy would be {depth} accounts deep; at most {MAX_DEPTH} are allowed")
            }
            HierarchyError::TooLarge { root } => {
                write!(f, "the hierarchy below {root} has more than {MAX_SUBTREE} accounts")
            }
            HierarchyError::Broken(m) => write!(f, "the stored hierarchy is inconsistent: {m}"),
        }
    }
}

impl std::error::Error for HierarchyError {}

/// The accounts of one type, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forest {
    nodes: BTreeMap<String, Node>,
}

/// One account of a subtree listing: id and depth below the subtree's root (root = 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The account.
    pub id: String,
    /// Its parent (`None` for the listed root's own parent is not shown).
    pub parent: Option<String>,
    /// Depth below the listed root.
    pub depth: usize,
}

impl Forest {
    /// An empty forest.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an account.
    pub fn insert(&mut self, id: impl Into<String>, node: Node) {
        self.nodes.insert(id.into(), node);
    }

    /// An account.
    pub fn get(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there is no account.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every account id.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// `[id, parent, grand-parent, ..., root]`.
    pub fn path_to_root(&self, id: &str) -> Result<Vec<String>, HierarchyError> {
        let mut path = vec![id.to_string()];
        let mut node = self.nodes.get(id).ok_or_else(|| HierarchyError::Unknown(id.into()))?;
        while let Some(p) = &node.parent {
            if path.contains(p) {
                return Err(HierarchyError::Broken(format!("{id} has a loop among its ancestors at {p}")));
            }
            if path.len() > MAX_DEPTH {
                return Err(HierarchyError::Broken(format!("{id} is more than {MAX_DEPTH} accounts deep")));
            }
            path.push(p.clone());
            node = self.nodes.get(p).ok_or_else(|| HierarchyError::Broken(format!("parent {p} does not exist")))?;
        }
        Ok(path)
    }

    fn children_map(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (id, n) in &self.nodes {
            if let Some(p) = &n.parent {
                children.entry(p.as_str()).or_default().push(id.as_str());
            }
        }
        children
    }

    /// Ids of the direct children of `id`.
    pub fn children(&self, id: &str) -> Vec<String> {
        self.nodes.iter().filter(|(_, n)| n.parent.as_deref() == Some(id)).map(|(c, _)| c.clone()).collect()
    }

    /// The subtree below `id`, itself first, breadth-first (children in id order).
    pub fn subtree(&self, id: &str) -> Result<Vec<Placed>, HierarchyError> {
        let root = self.nodes.get(id).ok_or_else(|| HierarchyError::Unknown(id.into()))?;
        let children = self.children_map();
        let mut out = vec![Placed { id: id.into(), parent: root.parent.clone(), depth: 0 }];
        let mut queue = VecDeque::from([(id, 0usize)]);
        while let Some((cur, depth)) = queue.pop_front() {
            for c in children.get(cur).into_iter().flatten() {
                if *c == id || depth + 1 > MAX_DEPTH {
                    return Err(HierarchyError::Broken(format!("the subtree of {id} loops back at {c}")));
                }
                if out.len() >= MAX_SUBTREE {
                    return Err(HierarchyError::TooLarge { root: id.into() });
                }
                out.push(Placed { id: (*c).into(), parent: Some(cur.into()), depth: depth + 1 });
                queue.push_back((c, depth + 1));
            }
        }
        Ok(out)
    }

    /// Checks that `id` may be placed under `new_parent` (`None`: become a root). See the module doc.
    pub fn check_move(&self, id: &str, new_parent: Option<&str>) -> Result<(), HierarchyError> {
        if !self.nodes.contains_key(id) {
            return Err(HierarchyError::Unknown(id.into()));
        }
        let Some(parent) = new_parent else {
            return Ok(());
        };
        if !self.nodes.contains_key(parent) {
            return Err(HierarchyError::Unknown(parent.into()));
        }
        // Walk up from the new parent: meeting `id` means the parent is inside the moved subtree.
        let mut chain = Vec::new();
        let mut cur = Some(parent.to_string());
        while let Some(c) = cur {
            chain.push(c.clone());
            if c == id {
                return Err(HierarchyError::Cycle { moving: id.into(), under: parent.into(), chain });
            }
            if chain.len() > MAX_DEPTH {
                return Err(HierarchyError::TooDeep { depth: chain.len() + 1 });
            }
            cur = self.nodes.get(&c).and_then(|n| n.parent.clone());
        }
        let height = self.subtree(id)?.iter().map(|p| p.depth).max().unwrap_or(0) + 1;
        let depth = chain.len() + height;
        if depth > MAX_DEPTH {
            return Err(HierarchyError::TooDeep { depth });
        }
        Ok(())
    }

    /// Moves the subtree of `id` under `new_parent` (or makes it a root); refused moves change nothing.
    pub fn move_to(&mut self, id: &str, new_parent: Option<&str>) -> Result<(), HierarchyError> {
        self.check_move(id, new_parent)?;
        if let Some(n) = self.nodes.get_mut(id) {
            n.parent = new_parent.map(str::to_string);
        }
        Ok(())
    }

    /// The account that pays for `id`'s charges: the nearest ancestor-or-self with
    /// `billRollUp: false`, or the root.
    pub fn payer_of(&self, id: &str) -> Result<String, HierarchyError> {
        let path = self.path_to_root(id)?;
        for a in &path {
            if !self.nodes[a].bill_roll_up {
                return Ok(a.clone());
            }
        }
        Ok(path.last().cloned().unwrap_or_else(|| id.to_string()))
    }

    /// Whether every account reaches a root without a loop and every parent exists.
    pub fn is_well_formed(&self) -> bool {
        self.nodes.keys().all(|id| self.path_to_root(id).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn forest(edges: &[(&str, Option<&str>, bool)]) -> Forest {
        let mut f = Forest::new();
        for (id, parent, roll) in edges {
            f.insert(*id, Node { parent: parent.map(str::to_string), bill_roll_up: *roll });
        }
        f
    }

    fn abc() -> Forest {
        // A ← B ← C, D root.
        forest(&[("A", None, false), ("B", Some("A"), true), ("C", Some("B"), true), ("D", None, false)])
    }

    #[test]
    fn a_cycle_is_refused_and_named() {
        let mut f = abc();
        let e = f.move_to("A", Some("C")).unwrap_err();
        assert_eq!(e.to_string(), "moving A under C would make a cycle: C → B → A");
        assert_eq!(f, abc());
        assert_eq!(f.move_to("A", Some("A")).unwrap_err().to_string(), "moving A under A would make a cycle: A → A");
        assert_eq!(f.move_to("A", Some("X")).unwrap_err(), HierarchyError::Unknown("X".into()));
        assert_eq!(f, abc());
    }

    #[test]
    fn moving_a_subtree_moves_its_descendants() {
        let mut f = abc();
        f.move_to("B", Some("D")).unwrap();
        assert_eq!(f.path_to_root("C").unwrap(), ["C", "B", "D"]);
        assert_eq!(f.payer_of("C").unwrap(), "D");
        f.move_to("B", None).unwrap();
        assert_eq!(f.path_to_root("C").unwrap(), ["C", "B"]);
        // B rolls up but is a root now: it pays for itself and for C.
        assert_eq!(f.payer_of("C").unwrap(), "B");
    }

    #[test]
    fn payer_is_nearest_non_rolling_ancestor() {
        let f = forest(&[
            ("R", None, false),
            ("M", Some("R"), false),
            ("L1", Some("M"), true),
            ("L2", Some("L1"), true),
            ("X", Some("R"), true),
        ]);
        assert_eq!(f.payer_of("L2").unwrap(), "M");
        assert_eq!(f.payer_of("M").unwrap(), "M");
        assert_eq!(f.payer_of("X").unwrap(), "R");
        let sub = f.subtree("M").unwrap();
        assert_eq!(sub.iter().map(|p| (p.id.as_str(), p.depth)).collect::<Vec<_>>(), [("M", 0), ("L1", 1), ("L2", 2)]);
        assert_eq!(f.children("R"), ["M", "X"]);
    }

    #[test]
    fn depth_is_limited() {
        let mut f = Forest::new();
        f.insert("n0", Node { parent: None, bill_roll_up: false });
        for i in 1..MAX_DEPTH {
            f.insert(format!("n{i}"), Node { parent: Some(format!("n{}", i - 1)), bill_roll_up: false });
        }
        f.insert("x", Node { parent: None, bill_roll_up: false });
        f.insert("y", Node { parent: Some("x".into()), bill_roll_up: false });
        assert!(f.check_move("x", Some(&format!("n{}", MAX_DEPTH - 2))).is_err());
        assert!(f.check_move("x", Some(&format!("n{}", MAX_DEPTH - 3))).is_ok());
        assert!(f.check_move("y", Some(&format!("n{}", MAX_DEPTH - 1))).is_err());
        assert!(f.check_move("y", Some(&format!("n{}", MAX_DEPTH - 2))).is_ok());
    }

    fn arb_forest() -> impl Strategy<Value = Forest> {
        // Node i may only point at a node j < i: always a forest.
        (1usize..40).prop_flat_map(|n| {
            proptest::collection::vec((any::<prop::sample::Index>(), any::<bool>(), any::<bool>()), n).prop_map(
                |spec| {
                    let mut f = Forest::new();
                    for (i, (pick, has_parent, roll)) in spec.into_iter().enumerate() {
                        let parent = (i > 0 && has_parent).then(|| format!("a{}", pick.index(i)));
                        f.insert(format!("a{i}"), Node { parent, bill_roll_up: roll });
                    }
                    f
                },
            )
        })
    }

    proptest! {
        #[test]
        fn random_moves_never_make_a_cycle(
            mut f in arb_forest(),
            moves in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<bool>()), 1..60),
        ) {
            prop_assert!(f.is_well_formed());
            let ids: Vec<String> = f.ids().map(str::to_string).collect();
            for (a, b, detach) in moves {
                let id = a.get(&ids).clone();
                let parent = if detach { None } else { Some(b.get(&ids).clone()) };
                let before = f.clone();
                match f.move_to(&id, parent.as_deref()) {
                    Ok(()) => {
                        prop_assert_eq!(f.get(&id).unwrap().parent.clone(), parent.clone());
                    }
                    Err(e) => {
                        prop_assert_eq!(&f, &before, "a refused move changed the forest: {}", e);
                        if let HierarchyError::Cycle { chain, .. } = &e {
                            prop_assert_eq!(chain.first(), parent.as_ref());
                            prop_assert_eq!(chain.last(), Some(&id));
                        }
                    }
                }
                prop_assert!(f.is_well_formed());
                for x in &ids {
                    let payer = f.payer_of(x).unwrap();
                    let path = f.path_to_root(x).unwrap();
                    prop_assert!(path.contains(&payer), "payer {} of {} is not an ancestor-or-self", payer, x);
                    let at = path.iter().position(|p| *p == payer).unwrap();
                    // Everything below the payer on the path rolls up; the payer does not (or is the root).
                    prop_assert!(path[..at].iter().all(|p| f.get(p).unwrap().bill_roll_up));
                    prop_assert!(!f.get(&payer).unwrap().bill_roll_up || at == path.len() - 1);
                }
            }
        }
    }
}

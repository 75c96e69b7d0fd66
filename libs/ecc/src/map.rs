//! XOR ECC maps: which Data fragments each Parity fragment covers, and the
//! bitmask machinery that proves how many lost positions a map survives.
//!
//! A map for `N` suppliers has `N` parities; parity `j` is the XOR of the data
//! fragments listed in its row `S_j`, and never covers `D_j` (position `j`
//! holds both `D_j` and `P_j`, so covering it would be useless when the
//! position is lost). Every set in here is a `u64` bitmask because `N <= 64`,
//! which makes one peeling run over a loss pattern cost a few hundred
//! nanoseconds at most.
//!
//! The theory used throughout: a pattern of lost positions `L` fails to decode
//! iff it contains a nonempty *stuck set* `S` of data such that no surviving
//! parity covers exactly one member of `S`. The cheapest pattern that exposes
//! `S` is `S` itself plus every parity outside `S` that covers exactly one of
//! its members (its *unique neighbours* `U(S)`), so
//! `tolerance = min over S of |S| + |U(S)|, minus 1`.
//! [`EccMap::min_failing_pattern`] computes that minimum exactly with a
//! branch-and-bound search.

use std::fmt::Write as _;
use std::sync::OnceLock;

/// The committed maps, one per supported supplier count.
const BUILTIN_TEXT: [(usize, &str); 7] = [
    (2, include_str!("../maps/ecc-2x2.txt")),
    (4, include_str!("../maps/ecc-4x4.txt")),
    (7, include_str!("../maps/ecc-7x7.txt")),
    (13, include_str!("../maps/ecc-13x13.txt")),
    (18, include_str!("../maps/ecc-18x18.txt")),
    (26, include_str!("../maps/ecc-26x26.txt")),
    (64, include_str!("../maps/ecc-64x64.txt")),
];

/// The tolerance the project asks of each map at minimum; the committed maps
/// meet or beat it (see `docs/ecc.md`).
pub const REQUIRED_TOLERANCE: [(usize, usize); 7] =
    [(2, 1), (4, 2), (7, 3), (13, 4), (18, 5), (26, 6), (64, 10)];

/// A parsed XOR ECC map for `N <= 64` suppliers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EccMap {
    suppliers: usize,
    tolerance: usize,
    /// Sorted data members of each parity.
    members: Vec<Vec<usize>>,
    /// Data members of each parity as a bitmask.
    rows: Vec<u64>,
    /// Parities covering each data fragment as a bitmask.
    cols: Vec<u64>,
}

/// A loss pattern that defeats the peeling decoder, as found by
/// [`EccMap::min_failing_pattern`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailingPattern {
    /// Data fragments that stay stuck.
    pub stuck: u64,
    /// Every lost position: the stuck data plus the parities that would
    /// otherwise have freed one of them.
    pub lost: u64,
}

impl FailingPattern {
    /// Number of lost positions in the pattern.
    pub fn size(&self) -> usize {
        self.lost.count_ones() as usize
    }
}

/// Bitmask of the low `n` bits.
pub fn low_bits(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// Iterates over the indices of the set bits of `mask`, lowest first.
pub fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            None
        } else {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            Some(i)
        }
    })
}

impl EccMap {
    /// Builds a map from the data members of each parity. `tolerance` is the
    /// claimed guarantee; it is not checked here (see [`EccMap::proven_tolerance`]).
    pub fn from_members(
        suppliers: usize,
        tolerance: usize,
        members: Vec<Vec<usize>>,
    ) -> Result<EccMap, String> {
        if !(1..=64).contains(&suppliers) {
            return Err(format!("{suppliers} suppliers: maps support 1..=64"));
        }
        if members.len() != suppliers {
            return Err(format!(
                "{} parity rows for {suppliers} suppliers",
                members.len()
            ));
        }
        let mut rows = vec![0u64; suppliers];
        let mut cols = vec![0u64; suppliers];
        let mut sorted = Vec::with_capacity(suppliers);
        for (j, row) in members.into_iter().enumerate() {
            let mut row = row;
            row.sort_unstable();
            for &i in &row {
                if i >= suppliers {
                    return Err(format!("parity {j} names data {i} >= {suppliers}"));
                }
                if i == j {
                    return Err(format!("parity {j} covers D{j}, which shares its position"));
                }
                if rows[j] & (1 << i) != 0 {
                    return Err(format!("parity {j} names data {i} twice"));
                }
                rows[j] |= 1 << i;
                cols[i] |= 1 << j;
            }
            if row.is_empty() {
                return Err(format!("parity {j} covers no data"));
            }
            sorted.push(row);
        }
        Ok(EccMap {
            suppliers,
            tolerance,
            members: sorted,
            rows,
            cols,
        })
    }

    /// Parses the text format written by `ecc-mapgen`:
    ///
    /// ```text
    /// # comments
    /// suppliers 7
    /// tolerance 3
    /// P0 = D1 D2 D4
    /// ...
    /// ```
    pub fn parse(text: &str) -> Result<EccMap, String> {
        let mut suppliers = None;
        let mut tolerance = None;
        let mut rows: Vec<(usize, Vec<usize>)> = Vec::new();
        for (lineno, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| format!("line {}: {what}: {raw:?}", lineno + 1);
            if let Some(v) = line.strip_prefix("suppliers ") {
                suppliers = Some(v.trim().parse::<usize>().map_err(|_| bad("bad number"))?);
            } else if let Some(v) = line.strip_prefix("tolerance ") {
                tolerance = Some(v.trim().parse::<usize>().map_err(|_| bad("bad number"))?);
            } else if let Some(rest) = line.strip_prefix('P') {
                let (idx, list) = rest.split_once('=').ok_or_else(|| bad("missing '='"))?;
                let j = idx
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| bad("bad parity index"))?;
                let mut row = Vec::new();
                for tok in list.split_whitespace() {
                    let i = tok
                        .strip_prefix('D')
                        .and_then(|d| d.parse::<usize>().ok())
                        .ok_or_else(|| bad("bad data member"))?;
                    row.push(i);
                }
                rows.push((j, row));
            } else {
                return Err(bad("unknown line"));
            }
        }
        let suppliers = suppliers.ok_or("missing 'suppliers' line")?;
        let tolerance = tolerance.ok_or("missing 'tolerance' line")?;
        rows.sort_by_key(|(j, _)| *j);
        if rows.iter().enumerate().any(|(k, (j, _))| k != *j) {
            return Err("parity rows must be P0..P(N-1), each once".to_string());
        }
        EccMap::from_members(
            suppliers,
            tolerance,
            rows.into_iter().map(|(_, r)| r).collect(),
        )
    }

    /// The committed map for `suppliers`, parsed once per process.
    pub fn builtin(suppliers: usize) -> Option<&'static EccMap> {
        static MAPS: [OnceLock<EccMap>; 7] = [const { OnceLock::new() }; 7];
        let k = BUILTIN_TEXT.iter().position(|(n, _)| *n == suppliers)?;
        Some(MAPS[k].get_or_init(|| {
            // The committed files are checked by the test suite, so a parse
            // failure here can only come from editing them by hand.
            match EccMap::parse(BUILTIN_TEXT[k].1) {
                Ok(map) if map.suppliers == suppliers => map,
                Ok(_) => panic!("maps/ecc-{suppliers}x{suppliers}.txt names the wrong size"),
                Err(e) => panic!("maps/ecc-{suppliers}x{suppliers}.txt is corrupt: {e}"),
            }
        }))
    }

    /// The committed text of the map for `suppliers`.
    pub fn builtin_text(suppliers: usize) -> Option<&'static str> {
        BUILTIN_TEXT
            .iter()
            .find(|(n, _)| *n == suppliers)
            .map(|(_, t)| *t)
    }

    /// Serialises the map in the format [`EccMap::parse`] reads, after the
    /// given comment lines.
    pub fn to_text(&self, comments: &[String]) -> String {
        let mut out = String::new();
        for c in comments {
            let _ = writeln!(out, "# {c}");
        }
        let _ = writeln!(out, "suppliers {}", self.suppliers);
        let _ = writeln!(out, "tolerance {}", self.tolerance);
        for (j, row) in self.members.iter().enumerate() {
            let _ = write!(out, "P{j} =");
            for i in row {
                let _ = write!(out, " D{i}");
            }
            out.push('\n');
        }
        out
    }

    /// Number of suppliers `N` (and of data and of parity fragments).
    pub fn suppliers(&self) -> usize {
        self.suppliers
    }

    /// The guaranteed number of simultaneously lost positions.
    pub fn tolerance(&self) -> usize {
        self.tolerance
    }

    /// Returns the same map claiming a different tolerance.
    pub fn with_tolerance(mut self, tolerance: usize) -> EccMap {
        self.tolerance = tolerance;
        self
    }

    /// Sorted data members of parity `j`.
    pub fn members(&self, parity: usize) -> &[usize] {
        &self.members[parity]
    }

    /// Data members of parity `j` as a bitmask.
    pub fn row_mask(&self, parity: usize) -> u64 {
        self.rows[parity]
    }

    /// Parities that cover data `i`, as a bitmask.
    pub fn col_mask(&self, data: usize) -> u64 {
        self.cols[data]
    }

    /// Number of parities each data fragment is in.
    pub fn column_weights(&self) -> Vec<usize> {
        self.cols.iter().map(|c| c.count_ones() as usize).collect()
    }

    /// Number of data fragments in each parity.
    pub fn row_weights(&self) -> Vec<usize> {
        self.members.iter().map(Vec::len).collect()
    }

    /// Whether parity `j` is parity 0 rotated by `j` (all the generated maps
    /// are), which lets the stuck-set search assume the set contains D0.
    pub fn is_circulant(&self) -> bool {
        let n = self.suppliers;
        (0..n).all(|j| {
            let rotated = bits(self.rows[0]).fold(0u64, |m, i| m | 1 << ((i + j) % n));
            rotated == self.rows[j]
        })
    }

    /// Runs the peeling decoder on bitmasks: starting from the known data and
    /// the available parities, repeatedly frees any data that is the only
    /// unknown member of an available parity. Returns the known data after.
    pub fn peel(&self, mut known: u64, parities: u64) -> u64 {
        let all = low_bits(self.suppliers);
        let mut live = parities & all;
        loop {
            let mut progress = false;
            for j in bits(live) {
                let unknown = self.rows[j] & !known;
                if unknown == 0 {
                    // Nothing left for this parity to free, ever.
                    live &= !(1 << j);
                } else if unknown & (unknown - 1) == 0 {
                    known |= unknown;
                    live &= !(1 << j);
                    progress = true;
                }
            }
            if !progress || known & all == all {
                return known;
            }
        }
    }

    /// Whether losing the positions in `lost` (a bitmask) still lets every
    /// data fragment be recovered.
    pub fn decodes(&self, lost: u64) -> bool {
        let all = low_bits(self.suppliers);
        self.peel(all & !lost, all & !lost) & all == all
    }

    /// The order in which peeling recovers missing data: `(data, parity)`
    /// pairs, each data freed by the parity once its other members are known.
    /// Returns the steps and the data still unknown at the end.
    pub fn peel_order(&self, known: u64, parities: u64) -> (Vec<(usize, usize)>, u64) {
        let all = low_bits(self.suppliers);
        let mut known = known & all;
        let mut live = parities & all;
        let mut steps = Vec::new();
        loop {
            let mut progress = false;
            for j in bits(live) {
                let unknown = self.rows[j] & !known;
                if unknown == 0 {
                    live &= !(1 << j);
                } else if unknown & (unknown - 1) == 0 {
                    known |= unknown;
                    live &= !(1 << j);
                    steps.push((unknown.trailing_zeros() as usize, j));
                    progress = true;
                }
            }
            if !progress || known == all {
                return (steps, all & !known);
            }
        }
    }

    /// The work of decoding after losing the positions in `lost`: the number
    /// of source fragments XORed in total and the length of the longest
    /// chain of recoveries that wait on each other. `None` if it fails.
    pub fn decode_cost(&self, lost: u64) -> Option<(usize, usize)> {
        let all = low_bits(self.suppliers);
        let (order, stuck) = self.peel_order(all & !lost, all & !lost);
        if stuck != 0 {
            return None;
        }
        let mut depth = [0usize; 64];
        let mut sources = 0;
        let mut longest = 0;
        for (d, p) in order {
            sources += self.members[p].len();
            depth[d] = 1 + bits(self.rows[p] & !(1 << d))
                .map(|m| depth[m])
                .max()
                .unwrap_or(0);
            longest = longest.max(depth[d]);
        }
        Some((sources, longest))
    }

    /// The costliest of `samples` random patterns of `size` lost positions
    /// (by [`EccMap::decode_cost`]; failing patterns are skipped), drawn from
    /// a fixed-seed generator: a reproducible worst case for benchmarks.
    pub fn costliest_pattern(&self, size: usize, samples: usize, seed: u64) -> Option<u64> {
        let mut rng = crate::mapgen::SplitMix64::new(seed);
        let mut best: Option<((usize, usize), u64)> = None;
        for _ in 0..samples {
            let lost = random_pattern(&mut rng, self.suppliers, size);
            if let Some(cost) = self.decode_cost(lost)
                && best.is_none_or(|(c, _)| cost > c)
            {
                best = Some((cost, lost));
            }
        }
        best.map(|(_, lost)| lost)
    }

    /// Unique neighbours of the data set `s`: parities outside `s` covering
    /// exactly one member of it.
    pub fn unique_neighbours(&self, s: u64) -> u64 {
        let (mut one, mut two) = (0u64, 0u64);
        for i in bits(s) {
            two |= one & self.cols[i];
            one |= self.cols[i];
        }
        one & !two & !s
    }

    /// The smallest loss pattern the peeling decoder cannot survive, if one
    /// has at most `limit` positions; `None` proves that every pattern of up
    /// to `limit` lost positions decodes. Exact (branch and bound over stuck
    /// sets), so `min_failing_pattern(t)` being `None` proves tolerance `t`.
    pub fn min_failing_pattern(&self, limit: usize) -> Option<FailingPattern> {
        let mut search = StuckSearch::new(self, limit + 1);
        search.run();
        search.best
    }

    /// The exact tolerance of the map (largest `t` such that every pattern of
    /// `t` lost positions decodes), computed with [`EccMap::min_failing_pattern`].
    pub fn proven_tolerance(&self) -> usize {
        match self.min_failing_pattern(self.suppliers) {
            Some(p) => p.size() - 1,
            None => self.suppliers,
        }
    }

    /// Every distinct failing loss pattern of exactly `size` positions that
    /// contains a stuck set whose own minimal pattern has `size` positions.
    /// When `size` is `tolerance + 1` this is every failing pattern of that
    /// size, so it gives the exact failure rate one step past the tolerance.
    pub fn minimal_failing_patterns(&self, size: usize) -> Vec<u64> {
        let mut all = self.stuck_patterns_up_to(size);
        all.retain(|l| l.count_ones() as usize == size);
        all
    }

    /// How many stuck sets the search meets whose patterns have at most
    /// `limit` positions, up to rotation for circulant maps (so the lone
    /// data fragment counts once); `None` once the count passes `cap`. A
    /// cheap proxy for the number of failing patterns, used to rank maps.
    pub fn count_stuck_sets(&self, limit: usize, cap: usize) -> Option<usize> {
        let mut search = StuckSearch::new(self, limit + 1);
        search.collect = Some(Vec::new());
        search.cap = cap;
        search.run();
        let found = search.collect.map_or(0, |list| list.len());
        (found <= cap).then_some(found)
    }

    /// The distinct patterns `S + U(S)` of at most `limit` positions over the
    /// stuck sets `S` the search meets. All are failing patterns, and every
    /// failing pattern of up to `limit` positions contains one of them.
    pub fn stuck_patterns_up_to(&self, limit: usize) -> Vec<u64> {
        let mut search = StuckSearch::new(self, limit + 1);
        search.collect = Some(Vec::new());
        search.run();
        let found = search.collect.unwrap_or_default();
        let mut all: Vec<u64> = if search.circulant {
            let n = self.suppliers;
            found
                .iter()
                .flat_map(|&l| (0..n).map(move |r| rotate(l, r, n)))
                .collect()
        } else {
            found
        };
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// A uniformly random set of `size` of the low `n` bits.
pub fn random_pattern(rng: &mut crate::mapgen::SplitMix64, n: usize, size: usize) -> u64 {
    let mut lost = 0u64;
    while (lost.count_ones() as usize) < size.min(n) {
        lost |= 1 << rng.below(n);
    }
    lost
}

/// Rotates the low `n` bits of `mask` up by `r` positions.
fn rotate(mask: u64, r: usize, n: usize) -> u64 {
    bits(mask).fold(0, |m, i| m | 1 << ((i + r) % n))
}

/// Branch and bound over stuck sets `S`, looking for `|S| + |U(S)| < bound`.
///
/// Each node holds a partial `S`, a set `A` of parities committed to stay
/// unique neighbours, and the elements that may still join `S`. It picks an
/// unresolved unique neighbour `j` and branches: either `j` is accepted into
/// `A` (so none of its members nor `j` itself may join `S`), or the first,
/// second, ... candidate that resolves it joins `S` (excluding the earlier
/// candidates). The branches partition the sets below the node, so every `S`
/// is met once. A lower bound counts unresolved neighbours no single
/// candidate can resolve together, since each needs its own step.
struct StuckSearch<'a> {
    map: &'a EccMap,
    /// Looking for patterns strictly smaller than this.
    bound: usize,
    best: Option<FailingPattern>,
    /// When set, collect every pattern below the bound instead of shrinking it.
    collect: Option<Vec<u64>>,
    /// Give up collecting past this many patterns.
    cap: usize,
    circulant: bool,
    /// `resolvers[j]`: elements whose joining `S` resolves parity `j`.
    resolvers: Vec<u64>,
    /// `clash[j]`: parities that share a resolver with `j`.
    clash: Vec<u64>,
}

/// One node of the stuck-set search.
#[derive(Clone, Copy)]
struct Node {
    s: u64,
    accepted: u64,
    barred: u64,
    one: u64,
    two: u64,
}

impl<'a> StuckSearch<'a> {
    fn new(map: &'a EccMap, bound: usize) -> StuckSearch<'a> {
        let n = map.suppliers;
        let resolvers: Vec<u64> = (0..n).map(|j| map.rows[j] | 1 << j).collect();
        let clash = resolvers
            .iter()
            .map(|&r| bits(r).fold(0u64, |m, x| m | map.cols[x] | 1 << x))
            .collect();
        StuckSearch {
            map,
            bound,
            best: None,
            collect: None,
            cap: usize::MAX,
            circulant: map.is_circulant(),
            resolvers,
            clash,
        }
    }

    fn run(&mut self) {
        let n = self.map.suppliers;
        // A circulant map looks the same from every data index, so every
        // stuck set has a rotation whose smallest member is D0.
        let roots = if self.circulant { 1 } else { n };
        let outside = !low_bits(n);
        for v in 0..roots {
            let barred = outside | low_bits(v + 1);
            let node = Node {
                s: 1 << v,
                accepted: 0,
                barred,
                one: self.map.cols[v],
                two: 0,
            };
            self.visit(node);
        }
    }

    fn visit(&mut self, node: Node) {
        if self
            .collect
            .as_ref()
            .is_some_and(|list| list.len() > self.cap)
        {
            return;
        }
        let unique = node.one & !node.two & !node.s & low_bits(self.map.suppliers);
        let open = unique & !node.accepted;
        let cost = (node.s.count_ones() + node.accepted.count_ones()) as usize;
        if open == 0 {
            if cost < self.bound {
                let pattern = FailingPattern {
                    stuck: node.s,
                    lost: node.s | node.accepted,
                };
                match &mut self.collect {
                    Some(list) => list.push(pattern.lost),
                    None => {
                        self.bound = cost;
                        self.best = Some(pattern);
                    }
                }
            }
            return;
        }
        if cost + self.independent_open(open) >= self.bound {
            return;
        }
        // Branch on the open neighbour with the fewest ways to resolve it.
        let mut pick = 0;
        let mut pick_options = u64::MAX;
        for j in bits(open) {
            let options = self.resolvers[j] & !node.barred & !node.s;
            if options.count_ones() < pick_options.count_ones() {
                pick = j;
                pick_options = options;
                if options == 0 {
                    break;
                }
            }
        }
        let options = pick_options;
        self.visit(Node {
            accepted: node.accepted | 1 << pick,
            barred: node.barred | self.resolvers[pick],
            ..node
        });
        let mut barred = node.barred;
        for x in bits(options) {
            let col = self.map.cols[x];
            self.visit(Node {
                s: node.s | 1 << x,
                barred,
                one: node.one | col,
                two: node.two | (node.one & col),
                ..node
            });
            barred |= 1 << x;
        }
    }

    /// Greedy count of open neighbours that pairwise share no resolver.
    fn independent_open(&self, mut open: u64) -> usize {
        let mut count = 0;
        while open != 0 {
            let j = open.trailing_zeros() as usize;
            open &= !self.clash[j];
            open &= !(1 << j);
            count += 1;
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 7-supplier circulant with differences {2, 4, 5}: tolerance 3.
    fn seven() -> EccMap {
        let members = (0..7)
            .map(|j| vec![(j + 2) % 7, (j + 4) % 7, (j + 5) % 7])
            .collect();
        EccMap::from_members(7, 3, members).unwrap()
    }

    #[test]
    fn parse_round_trips() {
        let map = seven();
        let text = map.to_text(&["hello".to_string()]);
        assert_eq!(EccMap::parse(&text).unwrap(), map);
    }

    #[test]
    fn rejects_self_cover() {
        assert!(EccMap::from_members(2, 1, vec![vec![0], vec![0]]).is_err());
    }

    #[test]
    fn stuck_search_matches_brute_force() {
        let map = seven();
        assert!(map.is_circulant());
        let found = map.min_failing_pattern(7).unwrap();
        let brute = (1u64..1 << 7)
            .filter(|&l| !map.decodes(l))
            .map(|l| l.count_ones() as usize)
            .min()
            .unwrap();
        assert_eq!(found.size(), brute);
        assert!(!map.decodes(found.lost));
        assert_eq!(map.proven_tolerance(), 3);
    }
}

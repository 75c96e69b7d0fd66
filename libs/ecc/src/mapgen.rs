//! The deterministic search that produced the committed maps in `maps/`.
//!
//! Every map is *circulant*: parity `j` covers `D(j + d mod N)` for each `d`
//! in a difference set `D ⊂ {1, .., N-1}`. That gives every data fragment and
//! every parity the same weight `|D|` (so encode work is balanced), never
//! puts `D_j` in parity `j`, and lets the exact stuck-set search in
//! [`crate::map`] fix one member of the stuck set, which makes proving the
//! tolerance of a 64-supplier map take well under a second.
//!
//! With weight `w` the tolerance is at most `w` (a lone lost data fragment is
//! stuck once its `w` parities are lost too). [`PLANS`] fixes, per `N`, the
//! smallest weight that reaches the best tolerance found (heavier circulants
//! were tried and do no better, see `docs/ecc.md`). A candidate set is scored
//! by its exact tolerance, then by how few loss patterns one past the
//! tolerance fail. Small search spaces are scored exhaustively; larger ones
//! are hill-climbed from a fixed-seed SplitMix64, so the same program always
//! writes the same files (`ecc-mapgen --check` verifies that). For `N = 64`
//! the sets are built from pairs with one common difference
//! ([`Shape::Pairs`]), which halves the loads of an encode.

use crate::map::EccMap;

/// Seed of the search; changing it changes the committed maps.
pub const SEED: u64 = 0xB17D_0057_ECC0_0001;

/// The shape of the difference sets a search explores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Any `weight` distinct differences.
    Free,
    /// `weight / 2` pairs `{a, a + δ}` sharing one `δ`: every parity then
    /// covers `weight / 2` pairs `D(i), D(i + δ)`, each shared by
    /// `weight / 2` parities, so an encode XORs each pair once per tile and
    /// reads half as many fragments per parity.
    Pairs,
}

/// How the search is run for one supplier count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Number of suppliers.
    pub suppliers: usize,
    /// Column (and row) weight of the map.
    pub weight: usize,
    /// Shape of the difference sets.
    pub shape: Shape,
    /// Hill-climbing steps.
    pub steps: usize,
}

const fn plan(suppliers: usize, weight: usize, shape: Shape, steps: usize) -> Plan {
    Plan {
        suppliers,
        weight,
        shape,
        steps,
    }
}

/// The search plan for every supported supplier count: the smallest weight
/// at which the search reaches its best tolerance (see `docs/ecc.md`). Pair
/// shapes pay off in encode speed only with many pairs, so only N = 64 uses
/// them.
pub const PLANS: [Plan; 7] = [
    plan(2, 1, Shape::Free, 10),
    plan(4, 2, Shape::Free, 50),
    plan(7, 3, Shape::Free, 200),
    plan(13, 4, Shape::Free, 400),
    plan(18, 5, Shape::Free, 400),
    plan(26, 6, Shape::Free, 400),
    plan(64, 10, Shape::Pairs, 400),
];

/// A small fixed-seed PRNG (SplitMix64), so the search needs no dependency
/// and gives the same answer on every platform.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (bound > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}

/// The circulant map with parity `j` covering `D(j + d mod n)` for `d` in `diffs`.
pub fn circulant(suppliers: usize, diffs: &[usize], tolerance: usize) -> Result<EccMap, String> {
    let members = (0..suppliers)
        .map(|j| diffs.iter().map(|d| (j + d) % suppliers).collect())
        .collect();
    EccMap::from_members(suppliers, tolerance, members)
}

/// Largest supplier count whose maps are ranked by the exact number of
/// failing patterns; larger ones use a cheaper proxy (see [`Score`]).
const EXACT_RANKING: usize = 32;

/// How good a difference set is: higher tolerance first, then fewer failing
/// patterns one past it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Score {
    /// Exact tolerance.
    pub tolerance: usize,
    /// For `N <= 32`, the exact number of failing patterns of
    /// `tolerance + 1` positions (at least `N` when the tolerance equals the
    /// weight: a lone data fragment with its parities). For larger `N`, the
    /// stuck sets behind them up to rotation (see
    /// [`EccMap::count_stuck_sets`]; at least 1), which the search can
    /// abandon as soon as it exceeds the current best.
    pub failing_next: usize,
}

impl Score {
    fn better_or_equal(&self, other: &Score) -> bool {
        (self.tolerance, std::cmp::Reverse(self.failing_next))
            >= (other.tolerance, std::cmp::Reverse(other.failing_next))
    }
}

/// Scores a difference set exactly, or `None` if it cannot match `floor`:
/// a lower tolerance, or (for large `N`) more stuck sets than it at the
/// same tolerance.
pub fn score(suppliers: usize, diffs: &[usize], floor: &Score) -> Option<Score> {
    let map = circulant(suppliers, diffs, 0).ok()?;
    let tolerance = match map.min_failing_pattern(diffs.len()) {
        Some(p) => p.size() - 1,
        None => diffs.len(),
    };
    if tolerance < floor.tolerance {
        return None;
    }
    let failing_next = if suppliers <= EXACT_RANKING {
        map.minimal_failing_patterns(tolerance + 1).len()
    } else {
        let cap = if tolerance == floor.tolerance {
            floor.failing_next
        } else {
            usize::MAX
        };
        map.count_stuck_sets(tolerance + 1, cap)?
    };
    Some(Score {
        tolerance,
        failing_next,
    })
}

/// The lowest score, which anything matches.
const FLOOR: Score = Score {
    tolerance: 0,
    failing_next: usize::MAX,
};

/// The outcome of a search: the difference set and its score.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Sorted difference set.
    pub diffs: Vec<usize>,
    /// The common difference of the pairs, for [`Shape::Pairs`].
    pub delta: Option<usize>,
    /// Its exact score.
    pub score: Score,
}

/// The difference set a genome stands for, if valid: for [`Shape::Free`]
/// the genes themselves, for [`Shape::Pairs`] `δ = genes[0]` and a pair
/// `{a, a + δ}` for each later gene `a`. All differences must be distinct
/// and nonzero mod `n`.
fn diffs_of(shape: Shape, n: usize, genes: &[usize]) -> Option<Vec<usize>> {
    let mut diffs: Vec<usize> = match shape {
        Shape::Free => genes.to_vec(),
        Shape::Pairs => {
            let delta = genes[0];
            genes[1..]
                .iter()
                .flat_map(|&a| [a, (a + delta) % n])
                .collect()
        }
    };
    diffs.sort_unstable();
    let distinct = diffs.windows(2).all(|w| w[0] != w[1]);
    (distinct && diffs.iter().all(|&d| d != 0)).then_some(diffs)
}

/// Free searches with at most this many difference sets try them all.
const EXHAUSTIVE_SETS: u64 = 50_000;

/// Number of `k`-subsets of an `n`-set, saturating.
fn binomial(n: usize, k: usize) -> u64 {
    (0..k.min(n)).fold(1u64, |acc, i| {
        acc.saturating_mul((n - i) as u64) / (i as u64 + 1)
    })
}

/// The best difference set of `plan`: every set when there are at most
/// 50,000 of them (free shape), else a seeded hill climb.
pub fn search(plan: Plan, seed: u64) -> Found {
    if plan.shape == Shape::Free && binomial(plan.suppliers - 1, plan.weight) <= EXHAUSTIVE_SETS {
        exhaustive(plan)
    } else {
        hill_climb(plan, seed)
    }
}

/// Scores every free difference set of `plan.weight`, first best wins.
fn exhaustive(plan: Plan) -> Found {
    let n = plan.suppliers;
    let w = plan.weight.min(n - 1);
    let mut best = Found {
        diffs: Vec::new(),
        delta: None,
        score: FLOOR,
    };
    // Walk the w-subsets of 1..n in lexicographic order.
    let mut set: Vec<usize> = (1..=w).collect();
    loop {
        if let Some(s) = score(n, &set, &best.score)
            && (best.diffs.is_empty() || !best.score.better_or_equal(&s))
        {
            best = Found {
                diffs: set.clone(),
                delta: None,
                score: s,
            };
        }
        let Some(k) = (0..w).rev().find(|&k| set[k] < n - w + k) else {
            return best;
        };
        set[k] += 1;
        for m in k + 1..w {
            set[m] = set[m - 1] + 1;
        }
    }
}

/// Hill-climbs over difference sets of `plan.shape` and `plan.weight`,
/// changing one gene per step and accepting sideways moves so it can cross
/// plateaus, and returns the best set met.
fn hill_climb(plan: Plan, seed: u64) -> Found {
    let n = plan.suppliers;
    let w = plan.weight;
    let genes = match plan.shape {
        Shape::Free => w,
        Shape::Pairs => 1 + w / 2,
    };
    let mut rng = SplitMix64::new(seed ^ (n as u64) << 32 ^ w as u64);
    let (mut current, mut current_diffs) = loop {
        let g: Vec<usize> = (0..genes).map(|_| 1 + rng.below(n - 1)).collect();
        if let Some(d) = diffs_of(plan.shape, n, &g) {
            break (g, d);
        }
    };
    let delta = |g: &[usize]| (plan.shape == Shape::Pairs).then(|| g[0]);
    let mut current_score = score(n, &current_diffs, &FLOOR).unwrap_or(FLOOR);
    let mut best = Found {
        diffs: current_diffs.clone(),
        delta: delta(&current),
        score: current_score.clone(),
    };
    for _ in 0..plan.steps {
        let least = if n <= EXACT_RANKING { n } else { 1 };
        if best.score.tolerance == w.min(n - 1) && best.score.failing_next <= least {
            // Tolerance w is the most weight w allows, and a lone data
            // fragment is always stuck at w + 1: nothing can score better.
            break;
        }
        let mut next = current.clone();
        next[rng.below(genes)] = 1 + rng.below(n - 1);
        let Some(next_diffs) = diffs_of(plan.shape, n, &next) else {
            continue;
        };
        if next_diffs == current_diffs {
            continue;
        }
        let Some(s) = score(n, &next_diffs, &current_score) else {
            continue;
        };
        if s.better_or_equal(&current_score) {
            current = next;
            current_diffs = next_diffs;
            current_score = s;
            if !best.score.better_or_equal(&current_score) {
                best = Found {
                    diffs: current_diffs.clone(),
                    delta: delta(&current),
                    score: current_score.clone(),
                };
            }
        }
    }
    best
}

/// Runs the search for one supplier count and returns the map, with its
/// proven tolerance, and the comment lines for its file.
pub fn generate(plan: Plan) -> (EccMap, Vec<String>) {
    let found = search(plan, SEED);
    let diffs: Vec<String> = found.diffs.iter().map(ToString::to_string).collect();
    let n = plan.suppliers;
    let t = found.score.tolerance;
    let map = match circulant(n, &found.diffs, t) {
        Ok(map) => map,
        // `search` only produces sets of distinct differences in 1..n.
        Err(e) => unreachable!("search produced an invalid map: {e}"),
    };
    let failing = map.minimal_failing_patterns(t + 1).len();
    let mut comments = vec![
        format!("XOR ECC map for {n} suppliers; generated by ecc-mapgen, do not edit."),
        "Regenerate: cargo run -p bitdust-ecc --release --bin ecc-mapgen".to_string(),
        if plan.shape == Shape::Free && binomial(n - 1, plan.weight) <= EXHAUSTIVE_SETS {
            format!(
                "Search: all {} difference sets of weight {} scored; the first best kept.",
                binomial(n - 1, plan.weight),
                plan.weight
            )
        } else {
            format!(
                "Search: {} hill-climbing steps from seed {SEED:#x}.",
                plan.steps
            )
        },
        format!(
            "Circulant: parity j covers D((j + d) mod {n}) for d in {{{}}}.",
            diffs.join(", ")
        ),
    ];
    if let Some(delta) = found.delta {
        comments.push(format!(
            "Pairs: the differences form {} pairs {{a, a + {delta}}}, so encodes share D(i) ^ D(i + {delta}).",
            plan.weight / 2
        ));
    }
    comments.push(format!(
        "Column and row weight {}; every loss of up to {t} positions decodes; {failing} patterns of {} lost positions fail.",
        plan.weight,
        t + 1
    ));
    (map, comments)
}

/// The file name of the map for `suppliers`.
pub fn file_name(suppliers: usize) -> String {
    format!("ecc-{suppliers}x{suppliers}.txt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_stable() {
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn scores_are_exact() {
        assert_eq!(score(7, &[2, 4, 5], &FLOOR).unwrap().tolerance, 3);
        let fano = score(7, &[1, 2, 4], &FLOOR).unwrap();
        assert_eq!(fano.tolerance, 2);
        let three = Score {
            tolerance: 3,
            failing_next: 1,
        };
        assert!(score(7, &[1, 2, 4], &three).is_none());
    }

    #[test]
    fn pair_genomes_expand() {
        assert_eq!(
            diffs_of(Shape::Pairs, 64, &[9, 4, 29]),
            Some(vec![4, 13, 29, 38])
        );
        assert_eq!(diffs_of(Shape::Pairs, 64, &[9, 4, 13]), None);
        assert_eq!(diffs_of(Shape::Pairs, 64, &[32, 32, 1]), None);
    }
}

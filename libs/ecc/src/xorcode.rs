//! The XOR scheme: encode, peeling decode, position rebuild and rebuild
//! planning on top of an [`EccMap`] and the [`xor`](crate::xor) engine.
//!
//! Fragment `f < N` is Data `f`, fragment `N + j` is Parity `j`. Planning is
//! done on `u64` bitmasks first; the buffer is only touched once a plan is
//! known to succeed, so a failing call leaves it unchanged.

use std::sync::OnceLock;

use crate::map::{EccMap, bits, low_bits};
use crate::xor::{self, Staged, Step};
use crate::{EccError, SUPPLIER_COUNTS, lost_positions};

/// Search nodes [`XorCode::rebuild_plan`] may visit before settling for the
/// best plan found so far.
const REBUILD_SEARCH_LIMIT: usize = 1_000_000;

/// A pair of data fragments becomes a shared temporary only if at least this
/// many parities use it: building it costs two loads and a store, and each
/// use saves one load.
const MIN_PAIR_USES: usize = 3;

/// A map plus its precomputed encode programs.
#[derive(Debug)]
pub(crate) struct XorCode {
    map: &'static EccMap,
    /// Every parity straight from its data members.
    encode_steps: Vec<Step>,
    /// The same through shared temporaries in a scratch (see [`staged_encode`]).
    staged: Staged,
    /// Whether `staged` shares pairs, so it beats `encode_steps` everywhere.
    shares_pairs: bool,
}

impl XorCode {
    /// The process-wide code for one of [`SUPPLIER_COUNTS`].
    pub(crate) fn builtin(suppliers: usize) -> Option<&'static XorCode> {
        static CODES: [OnceLock<XorCode>; 7] = [const { OnceLock::new() }; 7];
        let k = SUPPLIER_COUNTS.iter().position(|&n| n == suppliers)?;
        let map = EccMap::builtin(suppliers)?;
        Some(CODES[k].get_or_init(|| XorCode::new(map)))
    }

    fn new(map: &'static EccMap) -> XorCode {
        let n = map.suppliers();
        let encode_steps = (0..n)
            .map(|j| Step {
                dst: n + j,
                srcs: map.members(j).to_vec(),
            })
            .collect();
        let staged = staged_encode(map);
        let shares_pairs = staged.temps.iter().any(|t| t.len() > 1);
        XorCode {
            map,
            encode_steps,
            staged,
            shares_pairs,
        }
    }

    pub(crate) fn map(&self) -> &'static EccMap {
        self.map
    }

    pub(crate) fn encode(&self, fragments: &mut [u8], fragment_len: usize) {
        let n = self.map.suppliers();
        if xor::kernel_pays(n, fragment_len) && xor::run_kernel(fragments, fragment_len, n) {
            return;
        }
        if self.shares_pairs || xor::aliases(fragment_len) {
            xor::run_staged(fragments, fragment_len, &self.staged);
        } else {
            xor::run_split(
                fragments,
                fragment_len,
                self.map.suppliers(),
                &self.encode_steps,
            );
        }
    }

    /// The step that frees data `data` through parity `parity`.
    fn recover_step(&self, data: usize, parity: usize) -> Step {
        let n = self.map.suppliers();
        let mut srcs = Vec::with_capacity(self.map.members(parity).len());
        srcs.push(n + parity);
        srcs.extend(
            self.map
                .members(parity)
                .iter()
                .copied()
                .filter(|&m| m != data),
        );
        Step { dst: data, srcs }
    }

    pub(crate) fn reconstruct_data(
        &self,
        fragments: &mut [u8],
        fragment_len: usize,
        present: &mut [bool],
    ) -> Result<(), EccError> {
        let n = self.map.suppliers();
        let (known, parities) = masks(present, n);
        if known == low_bits(n) {
            return Ok(());
        }
        let (order, stuck) = self.map.peel_order(known, parities);
        if stuck != 0 {
            return Err(EccError::Unrecoverable {
                missing_data: bits(stuck).collect(),
                lost_positions: lost_positions(present, n),
            });
        }
        let steps: Vec<Step> = order
            .iter()
            .map(|&(d, p)| self.recover_step(d, p))
            .collect();
        xor::run(fragments, fragment_len, &steps);
        for (d, _) in order {
            present[d] = true;
        }
        Ok(())
    }

    pub(crate) fn reconstruct_position(
        &self,
        position: usize,
        fragments: &mut [u8],
        fragment_len: usize,
        present: &mut [bool],
    ) -> Result<(), EccError> {
        let n = self.map.suppliers();
        let (known, parities) = masks(present, n);
        let parity_missing = !present[n + position];
        let mut need = if present[position] { 0 } else { 1 << position };
        if parity_missing {
            need |= self.map.row_mask(position) & !known;
        }
        let (order, _) = self.map.peel_order(known, parities);
        let recovered = order.iter().fold(known, |k, &(d, _)| k | 1 << d);
        if need & !recovered != 0 {
            return Err(EccError::Unrecoverable {
                missing_data: bits(need & !recovered).collect(),
                lost_positions: lost_positions(present, n),
            });
        }
        // Keep only the peeling steps that feed what this position needs.
        let mut wanted = need;
        let mut keep = vec![false; order.len()];
        for (k, &(d, p)) in order.iter().enumerate().rev() {
            if wanted & 1 << d != 0 {
                keep[k] = true;
                wanted |= self.map.row_mask(p);
            }
        }
        let mut steps: Vec<Step> = order
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(&(d, p), _)| self.recover_step(d, p))
            .collect();
        if parity_missing {
            steps.push(self.encode_steps[position].clone());
        }
        xor::run(fragments, fragment_len, &steps);
        for step in &steps {
            present[step.dst] = true;
        }
        Ok(())
    }

    pub(crate) fn rebuild_plan(
        &self,
        position: usize,
        available: &[bool],
    ) -> Result<Vec<usize>, EccError> {
        let n = self.map.suppliers();
        let (mut data, mut parities) = masks(available, n);
        data &= !(1 << position);
        parities &= !(1 << position);
        let needed = 1 << position | self.map.row_mask(position);
        let reachable = self.map.peel(data, parities);
        if needed & !reachable != 0 {
            let mut flags = available.to_vec();
            flags[position] = false;
            flags[n + position] = false;
            return Err(EccError::Unrecoverable {
                missing_data: bits(needed & !reachable).collect(),
                lost_positions: lost_positions(&flags, n),
            });
        }
        let mut search = PlanSearch {
            map: self.map,
            data,
            parities,
            best: None,
            nodes: 0,
        };
        search.visit(needed, 0, 0);
        let (fetch_data, fetch_parities) = match search.best {
            Some((_, d, p)) => (d, p),
            // `reachable` covers `needed`, so the unrestricted search always
            // meets at least the plan that uses every available parity.
            None => unreachable!("rebuild search found no plan for a reachable position"),
        };
        Ok(bits(fetch_data)
            .chain(bits(fetch_parities).map(|j| n + j))
            .collect())
    }
}

/// Plans an encode through shared temporaries: greedily, the pair of data
/// fragments that the most parities still contain (at least
/// [`MIN_PAIR_USES`]) becomes one temporary, XORed once per tile, until no
/// pair is shared enough; what is left of each parity reads single-fragment
/// temporaries (plain copies). The maps whose difference set is built from
/// pairs with one common difference (see [`crate::mapgen`]) come out as one
/// pair temporary per data fragment and half the loads per parity.
pub(crate) fn staged_encode(map: &EccMap) -> Staged {
    let n = map.suppliers();
    let mut left: Vec<u64> = (0..n).map(|j| map.row_mask(j)).collect();
    let mut temps: Vec<Vec<usize>> = Vec::new();
    let mut uses: Vec<Vec<usize>> = vec![Vec::new(); n];
    loop {
        let mut counts = vec![0usize; n * n];
        for row in &left {
            for x in bits(*row) {
                for y in bits(*row & !low_bits(x + 1)) {
                    counts[x * n + y] += 1;
                }
            }
        }
        let Some((best, &count)) = counts
            .iter()
            .enumerate()
            .max_by_key(|&(k, &c)| (c, std::cmp::Reverse(k)))
        else {
            break;
        };
        if count < MIN_PAIR_USES || temps.len() + n > xor::MAX_TEMPS {
            break;
        }
        let (x, y) = (best / n, best % n);
        let pair = 1 << x | 1 << y;
        for (j, row) in left.iter_mut().enumerate() {
            if *row & pair == pair {
                *row &= !pair;
                uses[j].push(temps.len());
            }
        }
        temps.push(vec![x, y]);
    }
    let mut single = vec![usize::MAX; n];
    for (j, row) in left.iter().enumerate() {
        for x in bits(*row) {
            if single[x] == usize::MAX {
                single[x] = temps.len();
                temps.push(vec![x]);
            }
            uses[j].push(single[x]);
        }
    }
    let outputs = uses
        .into_iter()
        .enumerate()
        .map(|(j, srcs)| Step { dst: n + j, srcs })
        .collect();
    Staged {
        split: n,
        temps,
        outputs,
    }
}

/// The present data and parities of `flags` as bitmasks.
fn masks(flags: &[bool], n: usize) -> (u64, u64) {
    let mask = |range: &[bool]| {
        range
            .iter()
            .enumerate()
            .filter(|(_, ok)| **ok)
            .fold(0u64, |m, (i, _)| m | 1 << i)
    };
    (mask(&flags[..n]), mask(&flags[n..2 * n]))
}

/// Branch and bound over the set `Q` of parities a rebuild uses.
///
/// Fetching an available data fragment costs 1 and is never worse than
/// deriving it, so a plan is determined by `Q`: it fetches `Q` and every
/// available data member of `Q` and of the rebuilt position. While some
/// needed fragments stay unfreed ("open"), the first of them that a complete
/// plan frees must be freed by a parity not yet in `Q` (a parity in `Q`
/// with one open member would already have freed it), so the search
/// branches over parities covering open fragments: only those covering one
/// particular fragment when no parity in `Q` covers it, else all of them.
/// Each branch excludes the earlier ones, so no `Q` is visited twice. A
/// parity frees at most one fragment, which gives the lower bound.
struct PlanSearch<'a> {
    map: &'a EccMap,
    /// Available data, excluding the rebuilt position.
    data: u64,
    /// Available parities, excluding the rebuilt position.
    parities: u64,
    /// Best plan so far: (cost, data to fetch, parities to fetch).
    best: Option<(usize, u64, u64)>,
    nodes: usize,
}

impl PlanSearch<'_> {
    fn visit(&mut self, base: u64, chosen: u64, banned: u64) {
        self.nodes += 1;
        let needed = bits(chosen).fold(base, |m, j| m | self.map.row_mask(j));
        let fetched = needed & self.data;
        let cost = (fetched.count_ones() + chosen.count_ones()) as usize;
        let freed = self.map.peel(fetched, chosen);
        let open = needed & !freed;
        let best_cost = self.best.map_or(usize::MAX, |b| b.0);
        if open == 0 {
            if cost < best_cost {
                self.best = Some((cost, fetched, chosen));
            }
            return;
        }
        let unused = chosen.count_ones() - (freed & !fetched).count_ones();
        let more = open.count_ones().saturating_sub(unused).max(1) as usize;
        if cost + more >= best_cost || (self.best.is_some() && self.nodes > REBUILD_SEARCH_LIMIT) {
            return;
        }
        let free = self.parities & !chosen & !banned;
        let mut options = 0u64;
        let mut narrowed = false;
        for d in bits(open) {
            let o = self.map.col_mask(d) & free;
            if self.map.col_mask(d) & chosen == 0 {
                if !narrowed || o.count_ones() < options.count_ones() {
                    options = o;
                    narrowed = true;
                }
            } else if !narrowed {
                options |= o;
            }
        }
        let mut banned = banned;
        for j in bits(options) {
            self.visit(base, chosen | 1 << j, banned);
            banned |= 1 << j;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cheapest plan by trying every subset of the available parities.
    fn brute_force_cost(map: &EccMap, position: usize, data: u64, parities: u64) -> Option<usize> {
        let base = 1 << position | map.row_mask(position);
        let cands: Vec<usize> = bits(parities).collect();
        (0u64..1 << cands.len())
            .filter_map(|pick| {
                let q = bits(pick).fold(0u64, |m, k| m | 1 << cands[k]);
                let needed = bits(q).fold(base, |m, j| m | map.row_mask(j));
                let fetched = needed & data;
                (map.peel(fetched, q) & needed == needed)
                    .then(|| (fetched.count_ones() + q.count_ones()) as usize)
            })
            .min()
    }

    #[test]
    fn rebuild_plans_are_minimal() {
        let mut rng = crate::mapgen::SplitMix64::new(99);
        for n in [4, 7, 13] {
            let code = XorCode::builtin(n).unwrap();
            for _ in 0..300 {
                let losses = 1 + rng.below(code.map().tolerance() + 2);
                let lost = crate::map::random_pattern(&mut rng, n, losses);
                let p = bits(lost).nth(rng.below(losses)).unwrap();
                let mut avail = vec![true; 2 * n];
                for q in bits(lost) {
                    avail[q] = false;
                    avail[n + q] = false;
                }
                // Sometimes only one fragment of a position is gone.
                if rng.below(3) == 0 {
                    let q = bits(lost).next().unwrap();
                    avail[q + n * rng.below(2)] = true;
                }
                let all = low_bits(n);
                let (data, parities) = masks(&avail, n);
                let expect =
                    brute_force_cost(code.map(), p, data & !(1 << p), parities & !(1 << p) & all);
                match (code.rebuild_plan(p, &avail), expect) {
                    (Ok(plan), Some(cost)) => {
                        assert_eq!(plan.len(), cost, "n={n} p={p} lost={lost:#b}")
                    }
                    (Err(_), None) => {}
                    (got, want) => panic!("n={n} p={p} lost={lost:#b}: {got:?} vs {want:?}"),
                }
            }
        }
    }

    #[test]
    fn staged_direct_and_kernel_encodes_agree() {
        let mut rng = crate::mapgen::SplitMix64::new(5);
        for n in SUPPLIER_COUNTS {
            let code = XorCode::builtin(n).unwrap();
            // Odd numbers of 64-byte lines (what `Code::fragment_len` gives,
            // 65_600 for a 4 MiB block over 64) and even ones.
            for fl in [64, 192, 448, 4096, 4096 + 192, 65_536, 65_600, 70_016] {
                let mut a: Vec<u8> = (0..2 * n * fl).map(|_| rng.next_u64() as u8).collect();
                let mut b = a.clone();
                xor::run_split(&mut a, fl, n, &code.encode_steps);
                xor::run_staged(&mut b, fl, &code.staged);
                assert!(a == b, "n={n} fl={fl}");
                b[n * fl..].fill(0);
                let has_kernel = xor::run_kernel(&mut b, fl, n);
                assert_eq!(has_kernel, crate::kernelgen::SUPPLIERS.contains(&n));
                if has_kernel {
                    assert!(a == b, "kernel: n={n} fl={fl}");
                    // On a cache line, as in `AlignedBuf`, and 3 bytes past one.
                    let mut aligned = crate::AlignedBuf::zeroed(2 * n * fl);
                    aligned[..n * fl].copy_from_slice(&a[..n * fl]);
                    assert!(xor::run_kernel(&mut aligned, fl, n));
                    assert!(aligned[..] == a[..], "aligned kernel: n={n} fl={fl}");
                    let mut skewed = vec![0u8; 2 * n * fl + 3];
                    skewed[3..3 + n * fl].copy_from_slice(&a[..n * fl]);
                    assert!(xor::run_kernel(&mut skewed[3..], fl, n));
                    assert!(skewed[3..] == a[..], "skewed kernel: n={n} fl={fl}");
                }
            }
        }
    }

    #[test]
    fn full_rebuild_of_every_position_uses_one_equation_or_fewer() {
        for n in SUPPLIER_COUNTS {
            let code = XorCode::builtin(n).unwrap();
            let mut avail = vec![true; 2 * n];
            for p in 0..n {
                avail[p] = false;
                avail[n + p] = false;
                let plan = code.rebuild_plan(p, &avail).unwrap();
                // Members of P_p plus at most one parity and its other members.
                let w = code.map().members(p).len();
                let max_w = (0..n).map(|j| code.map().members(j).len()).max().unwrap();
                assert!(plan.len() <= w + max_w, "n={n} p={p} plan={plan:?}");
                avail[p] = true;
                avail[n + p] = true;
            }
        }
    }
}

//! Which snapshots a forget policy keeps (docs/snapshots.md, "Forget and
//! prune"), with restic's rules: `--keep-last N` keeps the N newest;
//! `--keep-hourly/daily/weekly/monthly/yearly N` keeps the newest snapshot
//! of each of the N newest hours (days, ISO weeks, months, years) that
//! have one; `--keep-within DURATION` keeps every snapshot taken within
//! DURATION (years, months, days, hours, as `1y2m3d4h`) of the newest one.
//! A snapshot is kept when any rule keeps it. Periods are in UTC (restic
//! uses local time), and a span that lands past the end of a month ends on
//! its last day (31 March less one month is 28 February; restic, through
//! Go's date normalisation, says 3 March).

use time::{Date, Duration, Month, OffsetDateTime};

/// A forget policy; all `None` keeps everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The newest N.
    pub last: Option<u32>,
    /// One per hour, for the newest N hours that have one.
    pub hourly: Option<u32>,
    /// One per day.
    pub daily: Option<u32>,
    /// One per ISO week.
    pub weekly: Option<u32>,
    /// One per month.
    pub monthly: Option<u32>,
    /// One per year.
    pub yearly: Option<u32>,
    /// Everything within this of the newest snapshot.
    pub within: Option<Within>,
}

impl Policy {
    /// Whether it names no rule (nothing would be forgotten).
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// A calendar span, as `--keep-within` takes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Within {
    /// Years.
    pub years: u32,
    /// Months.
    pub months: u32,
    /// Days.
    pub days: u32,
    /// Hours.
    pub hours: u32,
}

impl std::str::FromStr for Within {
    type Err = String;

    /// `1y2m3d4h`, any of the parts, each at most once, in that order.
    fn from_str(s: &str) -> Result<Within, String> {
        let bad = || format!("{s:?} is not a span like 1y2m3d4h (years, months, days, hours)");
        let mut w = Within::default();
        let mut rest = s;
        let mut order = 0;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits == rest.len() {
                return Err(bad());
            }
            let n: u32 = rest[..digits].parse().map_err(|_| bad())?;
            let (unit, next) = (rest.as_bytes()[digits], &rest[digits + 1..]);
            let (slot, rank) = match unit {
                b'y' => (&mut w.years, 1),
                b'm' => (&mut w.months, 2),
                b'd' => (&mut w.days, 3),
                b'h' => (&mut w.hours, 4),
                _ => return Err(bad()),
            };
            if rank <= order {
                return Err(bad());
            }
            order = rank;
            *slot = n;
            rest = next;
        }
        Ok(w)
    }
}

impl std::fmt::Display for Within {
    /// The form `from_str` reads (`0h` for an empty span).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ];
        let mut any = false;
        for (n, unit) in parts.into_iter().filter(|(n, _)| *n > 0) {
            write!(f, "{n}{unit}")?;
            any = true;
        }
        if !any {
            f.write_str("0h")?;
        }
        Ok(())
    }
}

/// Why a snapshot is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `--keep-last`.
    Last,
    /// `--keep-hourly`.
    Hourly,
    /// `--keep-daily`.
    Daily,
    /// `--keep-weekly`.
    Weekly,
    /// `--keep-monthly`.
    Monthly,
    /// `--keep-yearly`.
    Yearly,
    /// `--keep-within`.
    Within,
    /// No rule was given.
    NoPolicy,
    /// Another snapshot was named to be forgotten.
    NotNamed,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::Last => "last",
            Reason::Hourly => "hourly",
            Reason::Daily => "daily",
            Reason::Weekly => "weekly",
            Reason::Monthly => "monthly",
            Reason::Yearly => "yearly",
            Reason::Within => "within",
            Reason::NoPolicy => "no policy",
            Reason::NotNamed => "not named",
        })
    }
}

/// The decision for one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot.
    pub snapshot: u64,
    /// Why it is kept; empty: forgotten.
    pub kept_by: Vec<Reason>,
}

/// Why `forget` decided nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undecided {
    /// The snapshot named to be forgotten is not there.
    NoSuchSnapshot(u64),
    /// Neither a snapshot nor a rule was given.
    NoPolicy,
}

/// What `forget` does to `snapshots` (number, unix seconds), newest
/// first: forget exactly `only` when given (every other snapshot is kept
/// as not named), else apply `policy`, which must have a rule.
pub fn decide(
    policy: &Policy,
    snapshots: &[(u64, i64)],
    only: Option<u64>,
) -> Result<Vec<Decision>, Undecided> {
    match only {
        Some(n) => {
            if !snapshots.iter().any(|(s, _)| *s == n) {
                return Err(Undecided::NoSuchSnapshot(n));
            }
            let mut order: Vec<u64> = snapshots.iter().map(|(s, _)| *s).collect();
            order.sort_unstable_by(|a, b| b.cmp(a));
            Ok(order
                .into_iter()
                .map(|s| Decision {
                    snapshot: s,
                    kept_by: if s == n {
                        vec![]
                    } else {
                        vec![Reason::NotNamed]
                    },
                })
                .collect())
        }
        None if policy.is_empty() => Err(Undecided::NoPolicy),
        None => Ok(apply(policy, snapshots)),
    }
}

/// The sentence for a policy that has no rule, for every front end.
pub const NO_POLICY: &str = "no policy given, so forget would keep every snapshot; give --keep-last N (or another --keep-* flag), or a snapshot as ID@VERSION";

/// Applies `policy` to `snapshots` (number, unix seconds): the decisions,
/// newest first.
pub fn apply(policy: &Policy, snapshots: &[(u64, i64)]) -> Vec<Decision> {
    let mut order: Vec<(u64, i64)> = snapshots.to_vec();
    // Newest first; the higher number first among equal times.
    order.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    if policy.is_empty() {
        return order
            .iter()
            .map(|&(snapshot, _)| Decision {
                snapshot,
                kept_by: vec![Reason::NoPolicy],
            })
            .collect();
    }
    let date =
        |t: i64| OffsetDateTime::from_unix_timestamp(t).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    type Bucket = fn(OffsetDateTime) -> i64;
    let mut buckets: Vec<(Reason, u32, Bucket, Option<i64>)> = [
        (
            Reason::Hourly,
            policy.hourly,
            (|d: OffsetDateTime| d.unix_timestamp().div_euclid(3600)) as Bucket,
        ),
        (Reason::Daily, policy.daily, |d| {
            i64::from(d.date().to_julian_day())
        }),
        (Reason::Weekly, policy.weekly, |d| {
            let (y, w, _) = d.date().to_iso_week_date();
            i64::from(y) * 100 + i64::from(w)
        }),
        (Reason::Monthly, policy.monthly, |d| {
            i64::from(d.year()) * 100 + i64::from(u8::from(d.month()))
        }),
        (Reason::Yearly, policy.yearly, |d| i64::from(d.year())),
    ]
    .into_iter()
    .filter_map(|(r, n, f)| n.filter(|n| *n > 0).map(|n| (r, n, f, None)))
    .collect();
    let cutoff = match (policy.within, order.first()) {
        (Some(w), Some(&(_, newest))) => Some(subtract(date(newest), w).unix_timestamp()),
        _ => None,
    };
    let mut last_left = policy.last.unwrap_or(0);
    order
        .iter()
        .map(|&(snapshot, t)| {
            let mut kept_by = Vec::new();
            if last_left > 0 {
                last_left -= 1;
                kept_by.push(Reason::Last);
            }
            for (reason, left, bucket, seen) in buckets.iter_mut() {
                let b = bucket(date(t));
                if *left > 0 && *seen != Some(b) {
                    *left -= 1;
                    *seen = Some(b);
                    kept_by.push(*reason);
                }
            }
            if cutoff.is_some_and(|c| t >= c) {
                kept_by.push(Reason::Within);
            }
            Decision { snapshot, kept_by }
        })
        .collect()
}

/// `t` minus a calendar span (a day of month past the target month's end
/// becomes its last day).
fn subtract(t: OffsetDateTime, w: Within) -> OffsetDateTime {
    let months_back = i64::from(w.years) * 12 + i64::from(w.months);
    let index = i64::from(t.year()) * 12 + i64::from(u8::from(t.month()) - 1) - months_back;
    let (year, month0) = (index.div_euclid(12), index.rem_euclid(12));
    let shifted = i32::try_from(year)
        .ok()
        .and_then(|y| {
            let month = Month::try_from(month0 as u8 + 1).ok()?;
            let day = t.day().min(time::util::days_in_month(month, y));
            Date::from_calendar_date(y, month, day).ok()
        })
        .map(|d| t.replace_date(d))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    shifted - Duration::days(i64::from(w.days)) - Duration::hours(i64::from(w.hours))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;
    const DAY: i64 = 24 * HOUR;
    /// 2026-12-03 12:00 UTC, a Thursday.
    const NOW: i64 = 1_796_299_200;

    fn kept(policy: &Policy, snaps: &[(u64, i64)]) -> Vec<u64> {
        let mut k: Vec<u64> = apply(policy, snaps)
            .into_iter()
            .filter(|d| !d.kept_by.is_empty())
            .map(|d| d.snapshot)
            .collect();
        k.sort_unstable();
        k
    }

    /// One snapshot every 6 hours for 100 days, the newest last.
    fn series() -> Vec<(u64, i64)> {
        (0..400u64)
            .map(|i| (i + 1, NOW - (399 - i as i64) * 6 * HOUR))
            .collect()
    }

    #[test]
    fn no_policy_keeps_everything() {
        let s = series();
        assert_eq!(kept(&Policy::default(), &s).len(), 400);
    }

    #[test]
    fn keep_last_and_daily_keep_the_newest_of_each() {
        let s = series();
        let last = Policy {
            last: Some(3),
            ..Default::default()
        };
        assert_eq!(kept(&last, &s), [398, 399, 400]);
        // The newest of each of the 7 newest days: 12:00 today (400), then
        // 18:00 of each day before (397, 393, ...).
        let daily = Policy {
            daily: Some(7),
            ..Default::default()
        };
        let k = kept(&daily, &s);
        assert_eq!(k.len(), 7);
        assert_eq!(*k.last().unwrap(), 400);
        for w in k.windows(2).rev().skip(1) {
            assert_eq!(w[1] - w[0], 4, "{k:?}");
        }
        assert_eq!(k[5], 397, "yesterday's 18:00");
    }

    #[test]
    fn weekly_monthly_yearly_and_combinations() {
        let s = series();
        let weekly = Policy {
            weekly: Some(4),
            ..Default::default()
        };
        let k = kept(&weekly, &s);
        assert_eq!(k.len(), 4);
        assert!(k.contains(&400));
        let monthly = Policy {
            monthly: Some(12),
            ..Default::default()
        };
        // 100 days back from 3 December: August 25 to December, 5 months.
        assert_eq!(kept(&monthly, &s).len(), 5);
        let yearly = Policy {
            yearly: Some(3),
            ..Default::default()
        };
        assert_eq!(kept(&yearly, &s), [400]);
        let both = Policy {
            last: Some(2),
            daily: Some(3),
            ..Default::default()
        };
        // The two newest, and the newest of the three newest days.
        assert_eq!(kept(&both, &s).len(), 4);
        let d = apply(&both, &s);
        assert_eq!(d[0].kept_by, [Reason::Last, Reason::Daily]);
    }

    #[test]
    fn keep_within_counts_back_from_the_newest_in_calendar_units() {
        let s = series();
        let within = Policy {
            within: Some("2d".parse().unwrap()),
            ..Default::default()
        };
        // 2 days back from the newest, inclusive: 9 snapshots at 6 h.
        assert_eq!(kept(&within, &s).len(), 9);
        let month = Policy {
            within: Some("1m".parse().unwrap()),
            ..Default::default()
        };
        // 3 December back to 3 November: 30 days, 121 snapshots.
        assert_eq!(kept(&month, &s).len(), 121);
        // The end of a longer month maps to the end of a shorter one.
        let mar31 = OffsetDateTime::from_unix_timestamp(1_774_958_400).unwrap();
        assert_eq!((mar31.month(), mar31.day()), (Month::March, 31));
        let feb = subtract(mar31, "1m".parse().unwrap());
        assert_eq!((feb.month(), feb.day()), (Month::February, 28));
        let y = subtract(mar31, "1y2m3d4h".parse().unwrap());
        assert_eq!(
            (y.year(), y.month(), y.day(), y.hour()),
            (2025, Month::January, 28, 8)
        );
    }

    #[test]
    fn spans_parse_strictly() {
        assert_eq!(
            "1y2m3d4h".parse::<Within>().unwrap(),
            Within {
                years: 1,
                months: 2,
                days: 3,
                hours: 4
            }
        );
        assert_eq!("36h".parse::<Within>().unwrap().hours, 36);
        for bad in ["", "d", "3", "3x", "1d2y", "1d1d", "-1d", "1.5d"] {
            assert!(bad.parse::<Within>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn day_boundaries_are_utc() {
        let _ = DAY;
        let s = [(1, NOW - 13 * HOUR), (2, NOW - 11 * HOUR)];
        // 23:00 the day before and 01:00 today: two days.
        let daily = Policy {
            daily: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(&daily, &s), [1, 2]);
    }
}

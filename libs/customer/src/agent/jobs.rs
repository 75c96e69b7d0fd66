//! How many backups, restores and listings the agent runs at once, per
//! caller and in all.
//!
//! Each job holds its pipeline's buffers (tens of MiB) and its threads
//! until it ends, and its own caller can hold it up: a restore whose caller
//! never passes the descriptor asked for or reads no more of the stream, a
//! backup whose caller sends nothing after its start (`ls` and `diff`
//! stream at their caller's pace too). Without a cap, one member of group
//! bitdust could start restores until the agent ran out of memory. So
//! each caller runs at most [`PER_CALLER`] of each kind at once and users
//! together at most [`USERS_AT_ONCE`]; the system's own (root's and the
//! agent's user's: the nightly timer's backup) are counted apart, so no
//! user can keep them waiting. One more is refused at once, saying how
//! many run. Users who hold up their own jobs fill the users' places only
//! four together.

use bitdust_net::places::{Full, Place, Places};

use super::Caller;

/// Jobs of one kind one caller runs at once.
pub(super) const PER_CALLER: usize = 2;
/// Jobs of one kind all users other than the system run at once: a user
/// who holds up its own fills at most [`PER_CALLER`] of these.
pub(super) const USERS_AT_ONCE: usize = 8;

/// The places of one kind of job, keyed by the caller's uid (`None`: the
/// system).
#[derive(Debug)]
pub(super) struct Jobs {
    /// "backups", "restores", ..., for the refusal.
    what: &'static str,
    system: Places<Option<u32>>,
    users: Places<Option<u32>>,
}

/// A job's place, held while it runs.
pub(super) type Running = Place<Option<u32>>;

impl Jobs {
    pub(super) fn new(what: &'static str) -> Jobs {
        Jobs {
            what,
            system: Places::new(PER_CALLER, PER_CALLER),
            users: Places::new(USERS_AT_ONCE, PER_CALLER),
        }
    }

    /// A place for one more of `caller`'s jobs, or the one-line refusal.
    pub(super) fn start(&self, caller: Caller) -> Result<Running, String> {
        let what = self.what;
        let places = match caller {
            Caller::System => &self.system,
            Caller::User(_) => &self.users,
        };
        places.take(caller.owner()).map_err(|full| match (caller, full) {
            (Caller::System, _) => format!(
                "{PER_CALLER} {what} of root and the agent's user are running on this agent, the most they run at once; wait for one to end (or stop one that hangs) and try again"
            ),
            (Caller::User(uid), Full::PerKey) => format!(
                "{PER_CALLER} {what} of uid {uid} are running on this agent, the most one user runs at once; wait for one to end (or stop one that hangs) and try again"
            ),
            (Caller::User(_), Full::Total) => format!(
                "{USERS_AT_ONCE} {what} of users are running on this agent, the most it runs at once for users; wait for one to end and try again"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_runs_two_users_eight_and_the_system_s_are_never_kept_waiting_by_users() {
        let jobs = Jobs::new("restores");
        let a: Vec<_> = (0..2)
            .map(|_| jobs.start(Caller::User(1000)).unwrap())
            .collect();
        let e = jobs.start(Caller::User(1000)).unwrap_err();
        assert!(e.starts_with("2 restores of uid 1000 are running"), "{e}");
        let _b: Vec<_> = (1001..1004)
            .flat_map(|u| [u, u])
            .map(|u| jobs.start(Caller::User(u)).unwrap())
            .collect();
        let e = jobs.start(Caller::User(1004)).unwrap_err();
        assert!(e.starts_with("8 restores of users are running"), "{e}");
        // Users hold every place of theirs: the system's are its own.
        let s: Vec<_> = (0..2)
            .map(|_| jobs.start(Caller::System).unwrap())
            .collect();
        let e = jobs.start(Caller::System).unwrap_err();
        assert!(
            e.starts_with("2 restores of root and the agent's user are running"),
            "{e}"
        );
        // A place is given back when its job ends.
        drop(a);
        drop(s);
        jobs.start(Caller::User(1004)).unwrap();
        jobs.start(Caller::System).unwrap();
    }
}

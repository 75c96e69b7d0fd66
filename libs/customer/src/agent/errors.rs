//! Why an operation failed: one enum per operation (hire, fire, backup,
//! restore, recover), for the agent's own decisions (retry, give up, try
//! the next offer), turned into a gRPC status only at the edge
//! (`From<…> for Status`).

use bitdust_block::BackupId;
use tonic::Status;

use crate::state::CatalogError;

/// A caller asked for what only the system (root, the agent's user) may do.
#[derive(Debug, thiserror::Error)]
#[error("only root or the agent's own user may {what} (you are uid {uid})")]
pub struct NotSystem {
    /// What was asked.
    pub what: String,
    /// Who asked.
    pub uid: u32,
}

impl From<NotSystem> for Status {
    fn from(e: NotSystem) -> Status {
        Status::permission_denied(e.to_string())
    }
}

/// No such backup or version among those the caller may see.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// The caller has no backup at all.
    #[error("there are no backups yet; run bitdustctl backup PATH first")]
    NoBackups,
    /// No backup id starts with what was given.
    #[error("no backup id starts with {0:?}; see bitdustctl list")]
    NoSuchBackup(String),
    /// Several do.
    #[error("{count} backups match {given:?}; give more of the id (see bitdustctl list)")]
    Ambiguous {
        /// What was given.
        given: String,
        /// How many match.
        count: usize,
    },
    /// The backup has no such version.
    #[error("backup {id} has no version {version}; see bitdustctl list")]
    NoSuchVersion {
        /// The backup.
        id: BackupId,
        /// The version asked for.
        version: u64,
    },
    /// The catalog could not be read.
    #[error("the catalog failed: {0}")]
    Catalog(String),
}

impl From<SelectError> for Status {
    fn from(e: SelectError) -> Status {
        let m = e.to_string();
        match e {
            SelectError::NoBackups
            | SelectError::NoSuchBackup(_)
            | SelectError::NoSuchVersion { .. } => Status::not_found(m),
            SelectError::Ambiguous { .. } => Status::invalid_argument(m),
            SelectError::Catalog(_) => Status::internal(m),
        }
    }
}

/// Why a backup was not made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The request is malformed: no path, a relative path, a stream that
    /// does not begin with its start.
    #[error("{0}")]
    BadRequest(String),
    /// The caller sent nothing for too long.
    #[error("the caller sent no backup start in time; send start, the archive, then end")]
    Idle,
    /// The caller's stream failed (cancelled, cut).
    #[error("{}", .0.message())]
    Stream(Status),
    /// The agent is recovering: it backs nothing up.
    #[error(
        "cannot back up while recovering the backups of this key ({0}); wait, or give them up with bitdustctl start-afresh"
    )]
    Recovering(String),
    /// The same paths are being backed up.
    #[error("a backup of the same paths (backup {0}) is already running; wait for it to finish")]
    AlreadyRunning(BackupId),
    /// The caller, or users together, run as many backups as the agent
    /// runs at once.
    #[error("{0}")]
    Busy(String),
    /// Too few positions have a supplier.
    #[error(
        "only {hired} of {positions} positions have a supplier and a backup needs at least {need}; hire more with bitdustctl suppliers hire ADDR"
    )]
    TooFewSuppliers {
        /// Held positions.
        hired: usize,
        /// All positions.
        positions: usize,
        /// The fewest a backup may go to.
        need: usize,
    },
    /// The previous version (which holds the backup key) cannot be read.
    #[error("cannot read version {version} of backup {id} to continue it: {reason}")]
    PreviousUnreadable {
        /// The backup.
        id: BackupId,
        /// Its newest version.
        version: u64,
        /// Why.
        reason: String,
    },
    /// The pipeline or the suppliers failed; the attempt is collected.
    #[error("backup failed: {0}")]
    Failed(String),
    /// The catalog or the keys failed.
    #[error("{0}")]
    Internal(String),
    /// After the version was committed: pruning or storing the catalog.
    #[error("{}", .0.message())]
    Upkeep(Status),
}

impl From<BackupError> for Status {
    fn from(e: BackupError) -> Status {
        let m = e.to_string();
        match e {
            BackupError::BadRequest(_) => Status::invalid_argument(m),
            BackupError::Idle => Status::deadline_exceeded(m),
            BackupError::Stream(s) | BackupError::Upkeep(s) => s,
            BackupError::Recovering(_) | BackupError::TooFewSuppliers { .. } => {
                Status::failed_precondition(m)
            }
            BackupError::AlreadyRunning(_) | BackupError::Failed(_) => Status::aborted(m),
            BackupError::Busy(_) => Status::resource_exhausted(m),
            BackupError::PreviousUnreadable { .. } => Status::unavailable(m),
            BackupError::Internal(_) => Status::internal(m),
        }
    }
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Only the system restores into a directory as the agent.
    #[error(transparent)]
    NotSystem(#[from] NotSystem),
    /// The target is not an absolute path.
    #[error(
        "{0} is not an absolute path; give an absolute directory, or none to receive the archive"
    )]
    RelativeTarget(String),
    /// No such backup or version.
    #[error(transparent)]
    Select(#[from] SelectError),
    /// This agent holds no master key (a backup-only key set).
    #[error("{0}")]
    NoMasterKey(String),
    /// The version's manifest could not be read from the suppliers.
    #[error("cannot read the manifest of {id}@{version}: {reason}")]
    ManifestUnreadable {
        /// The backup.
        id: BackupId,
        /// The version.
        version: u64,
        /// Why.
        reason: String,
    },
    /// The backup key does not open with this master key.
    #[error("the backup key of {id}@{version} does not open with this master key: {reason}")]
    WrongKey {
        /// The backup.
        id: BackupId,
        /// The version.
        version: u64,
        /// Why.
        reason: String,
    },
    /// Blocks could not be fetched, decoded or written.
    #[error("restore of {id}@{version} failed: {reason}")]
    Failed {
        /// The backup.
        id: BackupId,
        /// The version.
        version: u64,
        /// Why.
        reason: String,
    },
    /// The caller, or users together, run as many restores as the agent
    /// runs at once.
    #[error("{0}")]
    Busy(String),
    /// A task of the agent failed.
    #[error("{0}")]
    Internal(String),
}

impl From<RestoreError> for Status {
    fn from(e: RestoreError) -> Status {
        let m = e.to_string();
        match e {
            RestoreError::NotSystem(e) => e.into(),
            RestoreError::Select(e) => e.into(),
            RestoreError::RelativeTarget(_) => Status::invalid_argument(m),
            RestoreError::NoMasterKey(_) | RestoreError::WrongKey { .. } => {
                Status::failed_precondition(m)
            }
            RestoreError::ManifestUnreadable { .. } => Status::unavailable(m),
            RestoreError::Failed { .. } => Status::aborted(m),
            RestoreError::Busy(_) => Status::resource_exhausted(m),
            RestoreError::Internal(_) => Status::internal(m),
        }
    }
}

/// Why recovering from the DHT and the suppliers did not succeed (yet).
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The DHT holds no supplier list of this key (yet).
    #[error(
        "no supplier list of {0} is in the DHT (yet); is this the exported key of a customer that made a backup?"
    )]
    NoList(String),
    /// The listed positions differ from the config's: retrying will not help.
    #[error(
        "the supplier list in the DHT has {listed} positions but the config asks for {configured}; set customer.suppliers = {listed}"
    )]
    Positions {
        /// In the list.
        listed: u32,
        /// In the config.
        configured: usize,
    },
    /// The local dht-peer failed.
    #[error("the DHT failed: {}", .0.message())]
    Dht(Status),
    /// The keys hold no master key, so no catalog opens.
    #[error("{0}")]
    NoMasterKey(String),
    /// No supplier returned a catalog that opens.
    #[error(
        "the suppliers were found but none returned a readable catalog; retry when more of them are up"
    )]
    NoCatalog,
    /// The local catalog failed.
    #[error("the catalog failed: {0}")]
    Catalog(String),
}

impl RecoverError {
    /// A mismatch that only the user can mend (the config, the keys):
    /// retrying alone will not help.
    pub fn needs_the_user(&self) -> bool {
        matches!(
            self,
            RecoverError::Positions { .. } | RecoverError::NoMasterKey(_)
        )
    }
}

/// No position for a supplier (shared by hire and hire-from-DHT).
#[derive(Debug, thiserror::Error)]
pub enum PositionError {
    /// The position asked for is out of range.
    #[error("position {position} does not exist; positions are 0 to {last}")]
    NoSuch {
        /// Asked for.
        position: u32,
        /// The last one.
        last: usize,
    },
    /// The position asked for is held.
    #[error(
        "position {0} is held by another supplier; fire it first (bitdustctl suppliers fire {0})"
    )]
    Held(u32),
    /// Every position is held.
    #[error(
        "all {0} positions have a supplier; fire one first (bitdustctl suppliers fire POSITION)"
    )]
    Full(usize),
}

/// Why a supplier was not hired.
#[derive(Debug, thiserror::Error)]
pub enum HireError {
    /// The agent is recovering: it hires nobody.
    #[error(
        "cannot hire a supplier while recovering the backups of this key ({0}); wait, or give them up with bitdustctl start-afresh"
    )]
    Recovering(String),
    /// The address given is not one.
    #[error("{0}")]
    BadAddress(String),
    /// The address is this agent's own.
    #[error("a customer cannot be its own supplier")]
    Itself,
    /// The supplier is hired already.
    #[error("supplier {node_id} already holds position {position}")]
    AlreadyHired {
        /// It.
        node_id: String,
        /// Where.
        position: usize,
    },
    /// No position for it.
    #[error(transparent)]
    Position(#[from] PositionError),
    /// The supplier said no.
    #[error("supplier {node_id} at {address} refused the service: {message}")]
    Refused {
        /// It.
        node_id: String,
        /// Where.
        address: String,
        /// Its words.
        message: String,
    },
    /// The supplier could not be reached or answered wrongly.
    #[error("cannot hire {address}: {reason}")]
    Unreachable {
        /// Where.
        address: String,
        /// Why.
        reason: String,
    },
    /// Another hire took the supplier or the position meanwhile.
    #[error("{0}")]
    Raced(String),
    /// No offer in the DHT took us.
    #[error(
        "the network could not supply a supplier: {rounds} random lookups found {seen} new offers, {asked} with room for {share} bytes were asked{last}; start more suppliers or retry later"
    )]
    NoOffer {
        /// Lookups.
        rounds: u32,
        /// Offers seen.
        seen: usize,
        /// Offers asked.
        asked: usize,
        /// Our share of the space.
        share: u64,
        /// The last refusal, as " (the last refusal: …)", or empty.
        last: String,
    },
    /// The DHT (the local dht-peer) failed.
    #[error("{0}")]
    Dht(String),
    /// The catalog failed.
    #[error("the catalog failed: {0}")]
    Catalog(String),
}

impl HireError {
    /// A mistake in the request: trying another supplier will not help.
    pub fn is_request_error(&self) -> bool {
        matches!(
            self,
            HireError::BadAddress(_)
                | HireError::Itself
                | HireError::Position(PositionError::NoSuch { .. })
        )
    }

    /// No position is free for a hire (nothing to do, not a failure).
    pub fn is_no_position(&self) -> bool {
        matches!(
            self,
            HireError::Position(PositionError::Held(_) | PositionError::Full(_))
        )
    }
}

impl From<HireError> for Status {
    fn from(e: HireError) -> Status {
        let m = e.to_string();
        match e {
            HireError::BadAddress(_)
            | HireError::Itself
            | HireError::Position(PositionError::NoSuch { .. }) => Status::invalid_argument(m),
            HireError::AlreadyHired { .. } => Status::already_exists(m),
            HireError::Recovering(_) | HireError::Position(_) | HireError::Refused { .. } => {
                Status::failed_precondition(m)
            }
            HireError::Unreachable { .. } | HireError::NoOffer { .. } | HireError::Dht(_) => {
                Status::unavailable(m)
            }
            HireError::Raced(_) => Status::aborted(m),
            HireError::Catalog(_) => Status::internal(m),
        }
    }
}

/// Why a supplier was not fired.
#[derive(Debug, thiserror::Error)]
pub enum FireError {
    /// The agent is recovering: it fires nobody.
    #[error(
        "cannot fire a supplier while recovering the backups of this key ({0}); wait, or give them up with bitdustctl start-afresh"
    )]
    Recovering(String),
    /// Nobody holds the position.
    #[error("no supplier holds position {0}")]
    NotHeld(u32),
    /// The catalog refused or failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl From<FireError> for Status {
    fn from(e: FireError) -> Status {
        match e {
            FireError::Recovering(_) => Status::failed_precondition(e.to_string()),
            FireError::NotHeld(_) => Status::not_found(e.to_string()),
            FireError::Catalog(c) => super::catalog_status(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn hiring_decides_on_variants_and_the_edge_maps_them_to_codes() {
        let no_such = HireError::Position(PositionError::NoSuch {
            position: 9,
            last: 6,
        });
        let held = HireError::Position(PositionError::Held(2));
        let refused = HireError::Refused {
            node_id: "n".into(),
            address: "192.0.2.1:7800".into(),
            message: "full".into(),
        };
        // hire_from_dht stops on a request error; fill_from_dht skips a
        // position that is no longer free; anything else is tried again.
        assert!(no_such.is_request_error() && !no_such.is_no_position());
        assert!(held.is_no_position() && !held.is_request_error());
        assert!(!refused.is_request_error() && !refused.is_no_position());
        assert!(HireError::Itself.is_request_error());
        for (e, code) in [
            (no_such, Code::InvalidArgument),
            (held, Code::FailedPrecondition),
            (refused, Code::FailedPrecondition),
            (HireError::Itself, Code::InvalidArgument),
            (HireError::Raced("x".into()), Code::Aborted),
            (HireError::Dht("x".into()), Code::Unavailable),
        ] {
            let m = e.to_string();
            let s = Status::from(e);
            assert_eq!(s.code(), code, "{m}");
            assert_eq!(s.message(), m);
        }
        assert_eq!(Status::from(FireError::NotHeld(3)).code(), Code::NotFound);
    }

    #[test]
    fn backup_restore_and_select_errors_keep_their_codes_and_words_at_the_edge() {
        let id: BackupId = BackupId::for_sources(&[7; 32], &[b"/home".to_vec()]);
        let cases: Vec<(Status, Code, &str)> = vec![
            (
                BackupError::BadRequest("name at least one path".into()).into(),
                Code::InvalidArgument,
                "name at least one path",
            ),
            (BackupError::Idle.into(), Code::DeadlineExceeded, "in time"),
            (
                BackupError::AlreadyRunning(id).into(),
                Code::Aborted,
                "is already running",
            ),
            (
                BackupError::TooFewSuppliers {
                    hired: 3,
                    positions: 7,
                    need: 5,
                }
                .into(),
                Code::FailedPrecondition,
                "only 3 of 7 positions have a supplier and a backup needs at least 5",
            ),
            (
                BackupError::Recovering("x".into()).into(),
                Code::FailedPrecondition,
                "cannot back up while recovering",
            ),
            (
                BackupError::Failed("no room".into()).into(),
                Code::Aborted,
                "backup failed: no room",
            ),
            (
                RestoreError::RelativeTarget("rel".into()).into(),
                Code::InvalidArgument,
                "rel is not an absolute path",
            ),
            (
                RestoreError::from(NotSystem {
                    what: "restore into a directory".into(),
                    uid: 1000,
                })
                .into(),
                Code::PermissionDenied,
                "(you are uid 1000)",
            ),
            (
                RestoreError::from(SelectError::NoBackups).into(),
                Code::NotFound,
                "there are no backups yet",
            ),
            (
                SelectError::Ambiguous {
                    given: "a".into(),
                    count: 2,
                }
                .into(),
                Code::InvalidArgument,
                "2 backups match",
            ),
            (
                RestoreError::Failed {
                    id,
                    version: 2,
                    reason: "r".into(),
                }
                .into(),
                Code::Aborted,
                "failed: r",
            ),
        ];
        for (s, code, words) in cases {
            assert_eq!(s.code(), code, "{}", s.message());
            assert!(s.message().contains(words), "{}", s.message());
        }
        // The caller's own stream error and upkeep errors pass through.
        let s: Status = BackupError::Stream(Status::cancelled("gone")).into();
        assert_eq!((s.code(), s.message()), (Code::Cancelled, "gone"));
        let s: Status = BackupError::Upkeep(Status::unavailable("later")).into();
        assert_eq!(s.code(), Code::Unavailable);
    }

    #[test]
    fn recovery_tells_what_only_the_user_can_mend() {
        let positions = RecoverError::Positions {
            listed: 7,
            configured: 4,
        };
        assert!(positions.needs_the_user());
        assert!(positions.to_string().contains("set customer.suppliers = 7"));
        assert!(RecoverError::NoMasterKey("backup-only".into()).needs_the_user());
        assert!(!RecoverError::NoCatalog.needs_the_user());
        assert!(!RecoverError::NoList("n".into()).needs_the_user());
        assert!(!RecoverError::Dht(Status::unavailable("down")).needs_the_user());
    }
}

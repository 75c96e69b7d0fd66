//! Why hiring or firing failed: one enum per operation, for the agent's own
//! decisions (retry, give up, try the next offer), turned into a gRPC
//! status only at the edge (`From<…> for Status`).

use tonic::Status;

use crate::state::CatalogError;

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
}

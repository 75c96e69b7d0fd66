//! Generated protobuf types. These stay at the edge: other crates convert
//! them into validated domain types before use.
#![allow(missing_docs, unreachable_pub)]

/// On-disk/on-wire formats of stored backup data.
pub mod format {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/bitdust.format.v1.rs"));
    }
}

//! Keys and signatures of BitDust.
//!
//! - [`NodeId`] / [`Identity`]: a node's ed25519 key pair. The node id *is*
//!   the public key, written in one text form everywhere (lowercase base32,
//!   52 characters).
//! - [`MasterKey`] / [`MasterRecipient`]: the customer's age X25519 master key.
//!   Only its public half is needed to make backups, so the secret half can be
//!   kept offline (write-only backups).
//! - [`BackupKey`]: a random age X25519 key made for each backup and *wrapped*
//!   (age-encrypted) to the master recipient. Blocks are encrypted to it, so
//!   handing one backup's key to somebody exposes no other backup.
//! - [`DedupKeys`]: a backup's dedup secrets (chunk ids, the chunker's
//!   seed, the key of the packs' chunk lists), derived from the identity.
//! - [`keyfile`]: secret key files are written 0600 and refused when readable
//!   by group or others.
//! - [`KeyRing`]: the key directory of one customer.

mod backup_key;
mod dedup;
mod identity;
pub mod keyfile;
mod keyring;
mod seal;

pub use backup_key::{BackupKey, MasterKey, MasterRecipient};
pub use dedup::{ChunkId, DedupKeys, ListOpenError, SEAL_OVERHEAD};
pub use identity::{Identity, NodeId, SIGNATURE_LEN, Signature, SignatureError};
pub use keyfile::KeyFileError;
pub use keyring::{KeyRing, KeyRingError, load_or_create_identity};
pub use seal::{OpenError, SealError, open, seal_into};

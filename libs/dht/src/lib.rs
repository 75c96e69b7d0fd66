//! BitDust's distributed hash table: Kademlia with 256-bit keys.
//!
//! - [`key`]: the key space, XOR distance, the place of a node in it.
//! - [`record`]: signed records (owner, kind, sequence, expiry, payload).
//! - [`routing`]: the routing table of k-buckets (k = 20).
//! - [`store`]: the records a node keeps for others, with per-peer limits.
//! - [`node`]: a node: answers requests and runs iterative parallel lookups
//!   (alpha = 3) over any [`node::Transport`].
//! - [`mem`]: an in-process transport that still encodes every message, for
//!   simulations of many nodes.

pub mod key;
pub mod mem;
pub mod node;
pub mod record;
pub mod routing;
pub mod store;

pub use key::Key;
pub use node::{Contact, Node, Transport};
pub use record::Record;

/// Bucket size and the number of nodes a lookup returns.
pub const K: usize = 20;
/// Requests a lookup keeps in flight.
pub const ALPHA: usize = 3;
/// The ALPN of the DHT protocol over QUIC.
pub const ALPN: &[u8] = b"bitdust/dht/1";

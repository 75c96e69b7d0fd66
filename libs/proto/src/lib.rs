//! Generated protobuf types and gRPC stubs. These stay at the edge: other
//! crates convert them into validated domain types before use.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::large_enum_variant
)]

/// On-disk/on-wire formats of stored backup data.
pub mod format {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/bitdust.format.v1.rs"));
    }
}

/// The peer protocol spoken over QUIC between customers and suppliers.
pub mod peer {
    /// Version 1 (ALPN `bitdust/peer/1`).
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/bitdust.peer.v1.rs"));
    }
}

/// The local gRPC service of bitdust-supplier-store.
pub mod supplier {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/bitdust.supplier.v1.rs"));
    }
}

/// The local gRPC service of bitdust-customer-agent.
pub mod customer {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/bitdust.customer.v1.rs"));
    }
}

/// The Kademlia DHT protocol spoken over QUIC between bitdust-dht-peer nodes,
/// and the local gRPC service of bitdust-dht-peer.
pub mod dht {
    /// Version 1 (ALPN `bitdust/dht/1`).
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/bitdust.dht.v1.rs"));
    }
}

/// The local gRPC service of bitdust-rebuilder.
pub mod rebuilder {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/bitdust.rebuilder.v1.rs"));
    }
}

/// The router (relay) protocol over QUIC, ALPN `bitdust/router/1`.
pub mod router {
    /// Version 1.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/bitdust.router.v1.rs"));
    }
}

/// Every message and service above as a serialized `FileDescriptorSet`, for
/// gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/bitdust_descriptor.bin"));

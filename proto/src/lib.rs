//! The shield v1 gRPC API, generated from `shield/v1/shield.proto`.
//!
//! Shared by the daemon (server), `shieldctl` and `shield-hook` (clients).

/// Generated messages and service stubs for `shield.v1`.
#[allow(missing_docs, reason = "generated code")]
#[allow(clippy::all, reason = "generated code")]
#[allow(
    clippy::allow_attributes_without_reason,
    reason = "generated code carries its own bare allows"
)]
pub mod v1 {
    tonic::include_proto!("shield.v1");
}

/// The encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("shield_descriptor");

pub mod client;
pub mod paths;

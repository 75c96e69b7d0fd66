//! TLS for QUIC on the node's own ed25519 key: a self-signed certificate,
//! and verifiers that take the peer's node id from its certificate instead of
//! trusting any authority.
//!
//! What proves who the peer is: the certificate's subject public key *is*
//! the node id, and the TLS 1.3 `CertificateVerify` signature, checked here
//! with that key, proves the peer holds its secret half. Nothing else in the
//! certificate (names, dates, issuer, its own signature) is trusted or needed.
//!
//! A dialer states the node it expects through the TLS server name: the node
//! id's text form (52 base32 characters, a valid DNS label). The reserved name
//! [`ANY_NODE`] accepts any node, for trust-on-first-use hiring by address.

use std::fmt;
use std::sync::Arc;

use bitdust_crypto::{Identity, NodeId};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::NetError;

/// The server name that accepts any node (trust on first use).
pub const ANY_NODE: &str = "any-node.bitdust.invalid";

/// The TLS server name to dial with: the expected node id, or [`ANY_NODE`].
pub(crate) fn server_name(expected: Option<NodeId>) -> String {
    expected.map_or_else(|| ANY_NODE.to_owned(), |id| id.to_string())
}

/// Why a certificate names no node.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CertError(String);

/// The node id in a certificate: its ed25519 subject public key.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Result<NodeId, CertError> {
    let (rest, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| CertError(format!("the peer certificate does not parse: {e}")))?;
    if !rest.is_empty() {
        return Err(CertError("the peer certificate has trailing bytes".into()));
    }
    let spki = parsed.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_SIG_ED25519 {
        return Err(CertError(
            "the peer certificate's key is not ed25519, so it is no BitDust node".into(),
        ));
    }
    NodeId::try_from(spki.subject_public_key.data.as_ref())
        .map_err(|_| CertError("the peer certificate's ed25519 key is not 32 bytes".into()))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The node's self-signed certificate and its key.
fn certificate(
    identity: &Identity,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), NetError> {
    let pkcs8 = identity.to_pkcs8_der();
    let key_pair = rcgen::KeyPair::try_from(pkcs8.as_slice())
        .map_err(|e| NetError::Tls(format!("the node key does not load: {e}")))?;
    let params = rcgen::CertificateParams::new(vec![identity.node_id().to_string()])
        .map_err(|e| NetError::Tls(e.to_string()))?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| NetError::Tls(format!("cannot sign the node certificate: {e}")))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    Ok((cert.der().clone(), key))
}

/// Accepts exactly the peers whose certificate holds an ed25519 key and who
/// sign the handshake with it.
struct NodeVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for NodeVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeVerifier")
    }
}

impl NodeVerifier {
    fn new(provider: &CryptoProvider) -> Arc<Self> {
        Arc::new(NodeVerifier {
            algorithms: provider.signature_verification_algorithms,
        })
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::General(
                "the peer signed the handshake with a non-ed25519 scheme".into(),
            ));
        }
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

fn general(e: CertError) -> rustls::Error {
    rustls::Error::General(e.0)
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id = node_id_of(end_entity).map_err(general)?;
        let name = match server_name {
            ServerName::DnsName(n) => n.as_ref().to_owned(),
            _ => String::new(),
        };
        if name == ANY_NODE {
            return Ok(ServerCertVerified::assertion());
        }
        let expected: NodeId = name
            .parse()
            .map_err(|_| rustls::Error::General(format!("{name} is not a node id to pin")))?;
        if expected != id {
            return Err(rustls::Error::General(format!(
                "the node answering is {id}, not the expected {expected}"
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used by QUIC".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for NodeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        node_id_of(end_entity).map_err(general)?;
        Ok(ClientCertVerified::assertion())
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used by QUIC".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

fn tls_err(e: impl fmt::Display) -> NetError {
    NetError::Tls(e.to_string())
}

/// The QUIC client side: presents the node certificate, verifies the server's.
pub(crate) fn client_config(
    identity: &Identity,
    alpn: &[u8],
) -> Result<Arc<QuicClientConfig>, NetError> {
    let provider = provider();
    let (cert, key) = certificate(identity)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(NodeVerifier::new(&provider))
        .with_client_auth_cert(vec![cert], key)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(
        QuicClientConfig::try_from(config).map_err(tls_err)?,
    ))
}

/// The QUIC server side: presents the node certificate, requires the client's.
pub(crate) fn server_config(
    identity: &Identity,
    alpn: &[u8],
) -> Result<Arc<QuicServerConfig>, NetError> {
    let provider = provider();
    let (cert, key) = certificate(identity)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(NodeVerifier::new(&provider))
        .with_single_cert(vec![cert], key)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(
        QuicServerConfig::try_from(config).map_err(tls_err)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_carries_the_node_id() {
        let identity = Identity::generate();
        let (cert, _) = certificate(&identity).unwrap();
        assert_eq!(node_id_of(&cert).unwrap(), identity.node_id());
        assert!(node_id_of(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_err());
    }
}

//! SIP over TLS (RFC 3261 §26.2, RFC 5630), sans-IO: a [`StreamSession`]
//! that decrypts what the socket read before framing it as SIP, and
//! encrypts what is sent. rustls does the TLS (1.2 and 1.3) and never
//! touches a socket: the worker drives it as it drives plain TCP.
//!
//! [`server_config`] and [`client_config`] read certificates, keys and
//! CAs from PEM files: the listener's chain and key, with a CA when
//! clients must present certificates (mutual TLS); rvoip's own client
//! certificate towards peers that ask for one, and the CAs it trusts.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

pub use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use super::grammar::Host;
use super::stream::{PlainStream, StreamError, StreamSession, Unsent};
use super::{Framing, Limits, SipMessage};

/// Why TLS settings cannot be made.
#[derive(Debug)]
pub struct TlsConfigError(pub String);

impl std::fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsConfigError {}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let err = |e: &dyn std::fmt::Display| TlsConfigError(format!("{}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&e))?;
    if certs.is_empty() {
        return Err(err(&"no certificate in the file"));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsConfigError(format!("{}: {e}", path.display())))
}

fn roots(path: &Path) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for c in certs(path)? {
        roots
            .add(c)
            .map_err(|e| TlsConfigError(format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// rustls on ring, the crypto rvoip already uses. rustls marks this
/// provider deprecated because it lacks post-quantum hybrid key exchange
/// (X25519MLKEM768); peers that offer it fall back to X25519.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A listener's TLS: its certificate chain and key; with `client_ca`,
/// clients must present a certificate that CA issued (mutual TLS).
pub fn server_config(
    chain: &Path,
    key_file: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots(ca)?))
                .build()
                .map_err(|e| TlsConfigError(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs(chain)?, key(key_file)?)
        .map_err(|e| TlsConfigError(format!("{}: {e}", chain.display())))?;
    Ok(Arc::new(config))
}

/// rvoip's TLS towards peers: the CAs it trusts for their certificates,
/// and its own chain and key for peers that ask for one.
pub fn client_config(
    ca: &Path,
    own: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError(e.to_string()))?
        .with_root_certificates(roots(ca)?);
    let config = match own {
        Some((chain, key_file)) => builder
            .with_client_auth_cert(certs(chain)?, key(key_file)?)
            .map_err(|e| TlsConfigError(format!("{}: {e}", chain.display())))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The PEM files of rvoip's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// The chain rvoip presents, as a server and as a client (leaf first).
    pub certificate: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// With it, TLS clients must present a certificate this CA issued.
    pub client_ca: Option<PathBuf>,
    /// The CAs rvoip trusts for the peers it connects to.
    pub peer_ca: PathBuf,
}

/// What identifies a version of the files: each one's modification time
/// and length.
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(paths: &TlsPaths) -> Stamp {
    let files = [
        Some(&paths.certificate),
        Some(&paths.key),
        paths.client_ca.as_ref(),
        Some(&paths.peer_ca),
    ];
    files
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p.as_ref()?).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

/// rvoip's TLS settings as of the files' last readable version: new
/// connections take the current ones, connections up keep theirs.
#[derive(Debug)]
pub struct Credentials {
    paths: TlsPaths,
    stamp: Mutex<Stamp>,
    current: RwLock<(Arc<ServerConfig>, Arc<ClientConfig>)>,
}

impl Credentials {
    /// Reads the files; an error names the file at fault.
    pub fn load(paths: TlsPaths) -> Result<Credentials, TlsConfigError> {
        let stamp = stamp(&paths);
        let current = Self::read(&paths)?;
        Ok(Credentials {
            paths,
            stamp: Mutex::new(stamp),
            current: RwLock::new(current),
        })
    }

    fn read(paths: &TlsPaths) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), TlsConfigError> {
        let server = server_config(&paths.certificate, &paths.key, paths.client_ca.as_deref())?;
        let client = client_config(&paths.peer_ca, Some((&paths.certificate, &paths.key)))?;
        Ok((server, client))
    }

    /// What a connection accepted now is served with.
    pub fn server(&self) -> Option<Arc<ServerConfig>> {
        self.current.read().ok().map(|c| Arc::clone(&c.0))
    }

    /// What a connection opened now is made with.
    pub fn client(&self) -> Option<Arc<ClientConfig>> {
        self.current.read().ok().map(|c| Arc::clone(&c.1))
    }

    /// Reads the files again if any changed since they were last read:
    /// `Ok(true)` when the new ones are in use, `Ok(false)` when nothing
    /// changed, an error (the previous settings stay) when the new files
    /// are not usable (a renewal half written, a key that does not match).
    pub fn reload_if_changed(&self) -> Result<bool, TlsConfigError> {
        let now = stamp(&self.paths);
        let Ok(mut last) = self.stamp.lock() else {
            return Ok(false);
        };
        if *last == now {
            return Ok(false);
        }
        *last = now;
        let fresh = Self::read(&self.paths)?;
        if let Ok(mut c) = self.current.write() {
            *c = fresh;
        }
        Ok(true)
    }
}

/// The name a peer's certificate must carry, also sent as SNI (RFC 5922
/// §4): the host of the URI a request was routed by (its top Route, else
/// its Request-URI) when that is a domain name; otherwise the address
/// connected to, which the certificate must then list.
pub fn peer_name(
    message: &[u8],
    dest: std::net::SocketAddr,
    limits: &Limits,
) -> ServerName<'static> {
    let by_address = ServerName::IpAddress(dest.ip().into());
    let Ok(m) = SipMessage::parse(message, Framing::Stream, limits) else {
        return by_address;
    };
    let uri = match m.routes().next() {
        Some(Ok(route)) => Some(route.uri),
        _ => m.request_uri().ok(),
    };
    match uri.and_then(|u| u.host) {
        Some(Host::Name(name)) => std::str::from_utf8(name)
            .ok()
            .and_then(|n| ServerName::try_from(n.to_ascii_lowercase()).ok())
            .unwrap_or(by_address),
        _ => by_address,
    }
}

/// The TLS side of a session.
#[derive(Debug)]
enum Tls {
    Server(Box<ServerConnection>),
    Client(Box<ClientConnection>),
}

/// Runs `f` on the session's connection, whichever side it is.
macro_rules! with_conn {
    ($tls:expr, $c:ident => $body:expr) => {
        match $tls {
            Tls::Server($c) => $body,
            Tls::Client($c) => $body,
        }
    };
}

/// SIP over TLS on one connection: the TLS records carry another
/// session's octets (SIP framed by Content-Length, or WebSocket frames).
pub struct TlsStream {
    tls: Tls,
    inner: Box<dyn StreamSession>,
    out: Unsent,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream").field("tls", &self.tls).finish()
    }
}

impl TlsStream {
    /// The server side of a connection a listener accepted.
    pub fn server(config: Arc<ServerConfig>, limits: Limits) -> Result<Self, StreamError> {
        Self::server_over(config, Box::new(PlainStream::new(limits)))
    }

    /// The server side of a connection whose plaintext `inner` reads.
    pub fn server_over(
        config: Arc<ServerConfig>,
        inner: Box<dyn StreamSession>,
    ) -> Result<Self, StreamError> {
        let c = ServerConnection::new(config).map_err(|e| StreamError::Tls(e.to_string()))?;
        Ok(TlsStream {
            tls: Tls::Server(Box::new(c)),
            inner,
            out: Unsent::default(),
        })
    }

    /// The client side of a connection rvoip opened to `name` (the name
    /// or address its certificate must carry; also sent as SNI).
    pub fn client(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        limits: Limits,
    ) -> Result<Self, StreamError> {
        let c = ClientConnection::new(config, name).map_err(|e| StreamError::Tls(e.to_string()))?;
        let mut s = TlsStream {
            tls: Tls::Client(Box::new(c)),
            inner: Box::new(PlainStream::new(limits)),
            out: Unsent::default(),
        };
        // The ClientHello goes first.
        s.pull_wire();
        Ok(s)
    }

    /// The peer's certificate chain, once it presented one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        with_conn!(&self.tls, c => c.peer_certificates())
    }

    /// Encrypts what the inner session has for the peer (a message sent,
    /// a WebSocket handshake's answer or pong).
    fn seal_inner(&mut self) -> Result<(), StreamError> {
        let plain = self.inner.wire();
        if plain.is_empty() {
            return Ok(());
        }
        self.out.room_for(plain.len())?;
        // Before the handshake is done rustls holds the plaintext and
        // sends it once it may.
        with_conn!(&mut self.tls, c => c.writer().write_all(plain))
            .map_err(|e| StreamError::Tls(e.to_string()))?;
        let n = plain.len();
        self.inner.consumed(n);
        self.pull_wire();
        Ok(())
    }

    /// Moves what TLS has for the socket into `out`.
    fn pull_wire(&mut self) {
        with_conn!(&mut self.tls, c => {
            while c.wants_write() {
                if c.write_tls(&mut self.out.0).is_err() {
                    break;
                }
            }
        });
    }
}

impl StreamSession for TlsStream {
    fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let r = with_conn!(&mut self.tls, c => c.read_tls(&mut rest));
            if r.map_err(|e| StreamError::Tls(e.to_string()))? == 0 {
                break;
            }
            let state = with_conn!(&mut self.tls, c => c.process_new_packets());
            // An alert for the peer may wait even when processing failed.
            self.pull_wire();
            let state = state.map_err(|e| StreamError::Tls(e.to_string()))?;
            let mut n = state.plaintext_bytes_to_read();
            let mut chunk = [0u8; 16 * 1024];
            while n > 0 {
                let got = with_conn!(&mut self.tls, c => c.reader().read(&mut chunk))
                    .map_err(|e| StreamError::Tls(e.to_string()))?;
                if got == 0 {
                    break;
                }
                self.inner.on_bytes(&chunk[..got])?;
                n = n.saturating_sub(got);
            }
        }
        self.seal_inner()
    }

    fn poll_message(&mut self) -> Result<Option<Vec<u8>>, StreamError> {
        let m = self.inner.poll_message();
        self.seal_inner()?;
        m
    }

    fn send(&mut self, message: &[u8]) -> Result<(), StreamError> {
        self.inner.send(message)?;
        self.seal_inner()
    }

    fn established(&self) -> bool {
        with_conn!(&self.tls, c => !c.is_handshaking()) && self.inner.established()
    }

    fn wire(&self) -> &[u8] {
        &self.out.0
    }

    fn consumed(&mut self, n: usize) {
        self.out.consumed(n);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::sip::stream::MAX_UNSENT;
    use std::path::PathBuf;

    const MSG: &[u8] = b"OPTIONS sip:a@127.0.0.1;transport=tls SIP/2.0\r\n\
Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK-1\r\nFrom: <sip:b@127.0.0.1>;tag=1\r\n\
To: <sip:a@127.0.0.1>\r\nCall-ID: t1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\
Content-Length: 4\r\n\r\nbody";

    fn file(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config/tls")
            .join(name)
    }

    fn crt() -> PathBuf {
        file("localhost-test-only.crt")
    }

    fn key_file() -> PathBuf {
        file("localhost-test-only.key")
    }

    /// Moves what each side has for the wire to the other, `cut` octets
    /// at a time, until neither has anything.
    fn pump(a: &mut TlsStream, b: &mut TlsStream, cut: usize) -> Result<(), StreamError> {
        for _ in 0..64 {
            let (wa, wb) = (a.wire().to_vec(), b.wire().to_vec());
            if wa.is_empty() && wb.is_empty() {
                return Ok(());
            }
            a.consumed(wa.len());
            b.consumed(wb.len());
            for piece in wa.chunks(cut.max(1)) {
                b.on_bytes(piece)?;
            }
            for piece in wb.chunks(cut.max(1)) {
                a.on_bytes(piece)?;
            }
        }
        Ok(())
    }

    fn pair(mutual: bool) -> (TlsStream, TlsStream) {
        let server = server_config(&crt(), &key_file(), mutual.then(crt).as_deref()).unwrap();
        let own = mutual.then(|| (crt(), key_file()));
        let client = client_config(
            &crt(),
            own.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        (
            TlsStream::client(client, name, Limits::default()).unwrap(),
            TlsStream::server(server, Limits::default()).unwrap(),
        )
    }

    #[test]
    fn sip_messages_cross_a_handshake_both_ways_however_the_records_are_cut() {
        for cut in [1, 7, 1500, 65_536] {
            let (mut c, mut s) = pair(false);
            assert!(!c.established());
            // Sent before the handshake: held by TLS until it may go.
            c.send(MSG).unwrap();
            pump(&mut c, &mut s, cut).unwrap();
            assert!(c.established() && s.established(), "cut {cut}");
            assert_eq!(s.poll_message(), Ok(Some(MSG.to_vec())), "cut {cut}");
            // A CRLF keep-alive (RFC 5626) between two messages.
            s.send(MSG).unwrap();
            s.send(b"\r\n\r\n").unwrap();
            s.send(MSG).unwrap();
            pump(&mut c, &mut s, cut).unwrap();
            assert_eq!(c.poll_message(), Ok(Some(MSG.to_vec())));
            assert_eq!(c.poll_message(), Ok(Some(MSG.to_vec())));
            assert_eq!(c.poll_message(), Ok(None));
            assert!(
                s.peer_certificates().is_none(),
                "no client certificate asked"
            );
        }
    }

    #[test]
    fn mutual_tls_takes_the_clients_certificate_and_refuses_a_client_without_one() {
        let (mut c, mut s) = pair(true);
        c.send(MSG).unwrap();
        pump(&mut c, &mut s, 1500).unwrap();
        assert_eq!(s.poll_message(), Ok(Some(MSG.to_vec())));
        assert_eq!(s.peer_certificates().map(<[_]>::len), Some(1));
        // A client with no certificate of its own: the server refuses it.
        let server = server_config(&crt(), &key_file(), Some(&crt())).unwrap();
        let client = client_config(&crt(), None).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut c = TlsStream::client(client, name, Limits::default()).unwrap();
        let mut s = TlsStream::server(server, Limits::default()).unwrap();
        c.send(MSG).unwrap();
        let r = pump(&mut c, &mut s, 1500);
        assert!(matches!(r, Err(StreamError::Tls(_))), "{r:?}");
        assert_eq!(s.poll_message(), Ok(None));
    }

    #[test]
    fn a_certificate_for_another_name_and_bytes_that_are_not_tls_are_refused() {
        let server = server_config(&crt(), &key_file(), None).unwrap();
        let client = client_config(&crt(), None).unwrap();
        let other = ServerName::try_from("sbc.example.net").unwrap();
        let mut c = TlsStream::client(client, other, Limits::default()).unwrap();
        let mut s = TlsStream::server(server.clone(), Limits::default()).unwrap();
        let r = pump(&mut c, &mut s, 1500);
        assert!(matches!(r, Err(StreamError::Tls(_))), "{r:?}");
        // Plain SIP on a TLS listener.
        let mut s = TlsStream::server(server, Limits::default()).unwrap();
        assert!(matches!(s.on_bytes(MSG), Err(StreamError::Tls(_))));
        // The listener answers with an alert before it closes.
        assert!(!s.wire().is_empty());
    }

    #[test]
    fn a_client_of_tls_1_2_only_is_served_too() {
        let server = server_config(&crt(), &key_file(), None).unwrap();
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots(&crt()).unwrap())
            .with_no_client_auth();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut c = TlsStream::client(Arc::new(client), name, Limits::default()).unwrap();
        let mut s = TlsStream::server(server, Limits::default()).unwrap();
        c.send(MSG).unwrap();
        pump(&mut c, &mut s, 1500).unwrap();
        assert_eq!(s.poll_message(), Ok(Some(MSG.to_vec())));
        let version = match &s.tls {
            Tls::Server(c) => c.protocol_version(),
            Tls::Client(_) => None,
        };
        assert_eq!(version, Some(rustls::ProtocolVersion::TLSv1_2));
    }

    #[test]
    fn a_peer_that_does_not_read_is_refused_past_the_limit() {
        let (mut c, mut s) = pair(false);
        pump(&mut c, &mut s, 1500).unwrap();
        let big = vec![b'x'; 60_000];
        let mut refused = false;
        for _ in 0..40 {
            if s.send(&big) == Err(StreamError::Stalled) {
                refused = true;
                break;
            }
        }
        assert!(refused);
        assert!(s.wire().len() <= MAX_UNSENT + 64 * 1024);
    }

    #[test]
    fn missing_or_broken_files_are_named_in_the_error() {
        let none = Path::new("/nonexistent/rvoip.crt");
        let e = server_config(none, &key_file(), None).unwrap_err();
        assert!(e.0.contains("/nonexistent/rvoip.crt"), "{e}");
        let e = server_config(&key_file(), &key_file(), None).unwrap_err();
        assert!(e.0.contains("localhost-test-only.key"), "{e}");
        let e = client_config(none, None).unwrap_err();
        assert!(e.0.contains("/nonexistent"), "{e}");
    }
}

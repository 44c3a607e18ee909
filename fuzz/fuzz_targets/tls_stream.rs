//! SIP over TLS sessions: any octets from a peer, to a listener's session
//! or to a session rvoip opened, end in a TLS error or wait for more,
//! never a panic; nothing decrypts that a peer did not encrypt.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rvoip_dataplane::sip::Limits;
use rvoip_dataplane::sip::stream::StreamSession;
use rvoip_dataplane::sip::tls::{TlsStream, client_config, server_config};

fn configs() -> &'static (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    static C: OnceLock<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)> = OnceLock::new();
    C.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tls");
        let (crt, key) = (dir.join("localhost-test-only.crt"), dir.join("localhost-test-only.key"));
        (
            server_config(&crt, &key, None).unwrap_or_else(|e| panic!("{e}")),
            client_config(&crt, None).unwrap_or_else(|e| panic!("{e}")),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (server, client) = configs();
    let mut s = if mode & 1 == 0 {
        TlsStream::server(server.clone(), Limits::default())
    } else {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap_or_else(|e| panic!("{e}"));
        TlsStream::client(client.clone(), name, Limits::default())
    }
    .unwrap_or_else(|e| panic!("{e}"));
    for piece in rest.chunks(usize::from(mode >> 1).max(1)) {
        if s.on_bytes(piece).is_err() {
            return;
        }
    }
    // Without a handshake nothing is established and nothing decrypted.
    assert!(!s.established() || s.peer_certificates().is_some() || mode & 1 == 0);
    assert!(matches!(s.poll_message(), Ok(None) | Err(_)));
    let _ = s.send(b"OPTIONS sip:x SIP/2.0\r\n\r\n");
});

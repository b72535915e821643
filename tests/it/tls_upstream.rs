//! TLS to the upstream: a real TLS server (rustls) with a certificate from a test CA,
//! the demo app behind it, and the gateway connecting with SNI and verification.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::common::*;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{crypto::ring, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A TLS upstream for the name `upstream.test`, recording the SNI of each handshake.
struct TlsUpstream {
    addr: SocketAddr,
    /// Holds `ca.pem`, the test CA's certificate.
    ca_dir: tempfile::TempDir,
    server_names: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_upstream() -> TlsUpstream {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "licgate test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["upstream.test".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();

    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_names = Arc::new(Mutex::new(Vec::new()));
    let names = Arc::clone(&server_names);
    let task = tokio::spawn(async move {
        let mut connections = 0u64;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            connections += 1;
            let connection = connections;
            let acceptor = acceptor.clone();
            let names = Arc::clone(&names);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_string);
                names.lock().unwrap().push(sni);
                let _ = http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(tls),
                        service_fn(move |req| licgate::demo::app::handle(req, connection)),
                    )
                    .await;
            });
        }
    });
    let ca_dir = tempfile::tempdir().unwrap();
    std::fs::write(ca_dir.path().join("ca.pem"), ca.pem()).unwrap();
    TlsUpstream {
        addr,
        ca_dir,
        server_names,
        task,
    }
}

/// Starts the gateway with TLS to `upstream`; `extra` is added to `[upstream]`.
async fn gateway_with_tls(upstream: &TlsUpstream, extra: &str) -> Gateway {
    let ca_path = upstream.ca_dir.path().join("ca.pem");
    let config = BASE_CONFIG.replace(
        "address = \"{upstream}\"",
        &format!(
            "address = \"{{upstream}}\"\ntls = true\n{}",
            extra.replace("{ca}", ca_path.to_str().unwrap())
        ),
    );
    Gateway::start_with(&config, upstream.addr).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_tls_with_sni_and_keepalive() {
    let upstream = tls_upstream().await;
    let gw = gateway_with_tls(&upstream, "sni = \"upstream.test\"\nca_file = \"{ca}\"").await;

    let first = http_get(gw.addr, "/api/sales?x=1").await.unwrap();
    assert_eq!(first.status, 200, "{}\n{}", first.text(), gw.logs());
    assert_eq!(first.json()["query"], "x=1");
    let second = http_get(gw.addr, "/api/sales?x=2").await.unwrap();
    assert_eq!(second.status, 200);
    assert_eq!(
        first.json()["connection"],
        second.json()["connection"],
        "the TLS connection to the upstream is reused"
    );
    let names = upstream.server_names.lock().unwrap().clone();
    assert_eq!(names, vec![Some("upstream.test".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_for_another_name_is_refused() {
    let upstream = tls_upstream().await;
    let gw = gateway_with_tls(&upstream, "sni = \"other.test\"\nca_file = \"{ca}\"").await;
    let resp = http_get(gw.addr, "/api/sales").await.unwrap();
    assert_eq!(resp.status, 502);
    assert_eq!(resp.json()["error_code"], "UPSTREAM_UNAVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_is_refused_unless_verification_is_off() {
    let upstream = tls_upstream().await;
    let verified = gateway_with_tls(&upstream, "sni = \"upstream.test\"").await;
    assert_eq!(http_get(verified.addr, "/x").await.unwrap().status, 502);

    let unverified =
        gateway_with_tls(&upstream, "sni = \"upstream.test\"\nverify_cert = false").await;
    let resp = http_get(unverified.addr, "/x").await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["path"], "/x");
}

#[test]
fn check_rejects_a_ca_file_that_is_not_pem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
    let config = dir.path().join("licgate.toml");
    std::fs::write(
        &config,
        "[upstream]\naddress = \"h:443\"\ntls = true\nca_file = \"ca.pem\"\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(":4:11: upstream.ca_file:") && err.contains("holds no PEM certificate"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("ca.pem")).unwrap();
    let (code, _, err) = run_cli(&["check", "--config", config.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(":4:11: upstream.ca_file: cannot read"),
        "{err}"
    );
}

//! The smallest pingora reverse proxy: one fixed upstream (with licgate's default
//! timeouts), no checks, no header rewriting. `load/run` measures it beside licgate
//! to separate pingora's own cost from licgate's. It uses licgate's allocator
//! (mimalloc), so that the difference is licgate's work alone.
//!
//! Usage: cargo run --release --example bare_proxy -- LISTEN UPSTREAM THREADS [MODE]
//!
//! MODE: `per-thread` (what licgate does by default: one single-threaded service per
//! thread on the same listener), `steal` (one service on a work-stealing runtime), or
//! nothing (one service on pingora's no-stealing runtime of THREADS threads).

use std::time::Duration;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

/// The allocator licgate uses, so that the comparison measures licgate's work only.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream) = (&args[1], &args[2]);
    let threads: usize = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(2);
    let work_stealing = args.get(4).is_some_and(|a| a == "steal");
    let conf = ServerConf {
        threads,
        work_stealing,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut peer = HttpPeer::new(upstream.as_str(), false, String::new());
    // licgate's default upstream timeouts: every production proxy has them, and each
    // read and write of an upstream message then arms one of pingora's timers.
    let options = &mut peer.options;
    options.connection_timeout = Some(Duration::from_secs(5));
    options.total_connection_timeout = Some(Duration::from_secs(5));
    options.read_timeout = Some(Duration::from_secs(60));
    options.write_timeout = Some(Duration::from_secs(60));
    options.idle_timeout = Some(Duration::from_secs(60));
    if args.get(4).is_some_and(|a| a == "per-thread") {
        // One single-threaded service per thread, all on the same listening socket.
        for _ in 0..threads {
            let mut proxy = pingora::proxy::http_proxy_service(
                &server.configuration,
                Bare { peer: peer.clone() },
            );
            proxy.add_tcp(listen);
            proxy.threads = Some(1);
            server.add_service(proxy);
        }
    } else {
        let mut proxy = pingora::proxy::http_proxy_service(&server.configuration, Bare { peer });
        proxy.add_tcp(listen);
        proxy.threads = Some(threads);
        server.add_service(proxy);
    }
    server.run_forever();
}

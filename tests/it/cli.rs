//! `licgate check`, `serve` start-up failures, `--help` and `--version`.

use crate::common::*;

/// Writes `text` to a temp file and runs `licgate check` on it.
fn check(text: &str) -> (i32, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_string();
    let (code, out, err) = run_cli(&["check", "--config", &path]);
    (code, out, err, path)
}

const GOOD: &str = "[upstream]\naddress = \"127.0.0.1:8000\"\n";

#[test]
fn example_config_is_valid() {
    let path = repo_root().join("config/licgate.toml");
    let (code, out, err) = run_cli(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("configuration is valid"));
}

#[test]
fn minimal_config_is_valid() {
    let (code, _, err, _) = check(GOOD);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn unknown_key_is_named_with_line_and_column() {
    let (code, _, err, path) =
        check("[upstream]\naddress = \"127.0.0.1:8000\"\n  adress = \"x\"\n");
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "{path}:3:3: unknown field `adress`, expected one of `address`"
        )),
        "{err}"
    );
}

#[test]
fn unknown_top_level_key_is_named() {
    let (code, _, err, path) = check(&format!("{GOOD}\n[licence]\nx = 1\n"));
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("{path}:4:2: unknown key `licence`")),
        "{err}"
    );
}

#[test]
fn bad_listen_address_is_located() {
    let (code, _, err, path) = check(&format!(
        "[server]\nlisten = [\"0.0.0.0:8080\", \"localhost\"]\n{GOOD}"
    ));
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "{path}:2:27: server.listen: `localhost` is not a valid address"
        )),
        "{err}"
    );
}

#[test]
fn bad_upstream_address_is_located() {
    let (code, _, err, path) = check("[upstream]\naddress = \"127.0.0.1\"\n");
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "{path}:2:11: upstream.address: `127.0.0.1` is not a valid address: expected host:port"
        )),
        "{err}"
    );
}

#[test]
fn type_error_is_located_and_says_what_is_expected() {
    let (code, _, err, path) = check(&format!("[server]\nthreads = \"two\"\n{GOOD}"));
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "{path}:2:11: invalid type: string \"two\", expected an integer"
        )),
        "{err}"
    );
}

#[test]
fn bad_enum_value_lists_the_choices() {
    let (code, _, err, path) = check(&format!("mode = \"enforcing\"\n{GOOD}"));
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!(
            "{path}:1:8: unknown variant `enforcing`, expected one of `enforce`, `shadow`, `off`"
        )),
        "{err}"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let text = "\
mode = \"enforce\"
[server]
listen = \"nope\"
threads = 0
shutdown_timeout = \"soon\"
[upstream]
address = \"127.0.0.1:0\"
connect_timeout = \"-1s\"
[admin]
listen = \"127.0.0.1\"
";
    let (code, _, err, path) = check(text);
    assert_ne!(code, 0);
    let expected = [
        format!("{path}:3:10: server.listen: `nope` is not a valid address"),
        format!("{path}:4:11: server.threads must be between 1 and 1024, got 0"),
        format!("{path}:5:20: server.shutdown_timeout: `soon` is not a positive duration"),
        format!("{path}:7:11: upstream.address: `127.0.0.1:0` is not a valid address"),
        format!("{path}:8:19: upstream.connect_timeout: `-1s` is not a positive duration"),
        format!("{path}:10:10: admin.listen: `127.0.0.1` is not a valid address"),
    ];
    for e in &expected {
        assert!(err.contains(e.as_str()), "missing {e:?} in:\n{err}");
    }
    assert!(err.contains("6 problem(s)"), "{err}");
}

#[test]
fn a_type_error_does_not_hide_other_errors_in_its_section() {
    let text =
        "[server]\nthreads = \"x\"\nlisten = \"bad\"\n[upstream]\naddress = 5\ntls = \"yes\"\n";
    let (code, _, err, path) = check(text);
    assert_ne!(code, 0);
    for e in [
        format!("{path}:2:11: invalid type: string \"x\", expected an integer"),
        format!("{path}:3:10: server.listen: `bad` is not a valid address"),
        format!("{path}:5:11: invalid type: integer `5`, expected a string"),
        format!("{path}:6:7: invalid type: string \"yes\", expected a boolean"),
    ] {
        assert!(err.contains(e.as_str()), "missing {e:?} in:\n{err}");
    }
    assert!(
        !err.contains("required"),
        "no spurious 'required' for a key already reported: {err}"
    );
    assert!(err.contains("4 problem(s)"), "{err}");
}

#[test]
fn syntax_error_is_located() {
    let (code, _, err, path) = check("[server\nlisten = \"0.0.0.0:1\"\n");
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("{path}:1:8: unclosed table, expected `]`")),
        "{err}"
    );
}

#[test]
fn missing_upstream_section_is_reported() {
    let (code, _, err, path) = check("mode = \"off\"\n");
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("{path}:1:1: missing section [upstream]")),
        "{err}"
    );
}

#[test]
fn missing_file_is_reported() {
    let (code, _, err) = run_cli(&["check", "--config", "/nonexistent/licgate.toml"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("/nonexistent/licgate.toml:1:1: cannot read configuration file"),
        "{err}"
    );
}

#[test]
fn serve_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[upstream]\naddress = \"x\"\n").unwrap();
    let (code, _, err) = run_cli(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains(":2:11: upstream.address"), "{err}");
}

#[test]
fn serve_reports_a_listen_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"{addr}\"\n[upstream]\naddress = \"127.0.0.1:9\"\n[admin]\nlisten = \"{}\"\n",
            free_addr()
        ),
    )
    .unwrap();
    let (code, _, err) = run_cli(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("cannot listen on {addr} (server.listen)")),
        "{err}"
    );
}

#[test]
fn config_path_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("env.toml");
    std::fs::write(&path, GOOD).unwrap();
    let out = std::process::Command::new(licgate_bin())
        .arg("check")
        .env("LICGATE_CONFIG", &path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("env.toml"));
}

#[test]
fn help_and_version() {
    let (code, out, _) = run_cli(&["--help"]);
    assert_eq!(code, 0);
    for word in ["serve", "check", "demo", "Examples:", "SIGTERM"] {
        assert!(out.contains(word), "--help lacks {word}:\n{out}");
    }
    let (code, out, _) = run_cli(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("licgate {}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_probes_the_admin_listener() {
    let upstream = Upstream::start().await;
    let gateway = Gateway::start(upstream.addr).await;
    let admin = gateway.admin.to_string();
    let config = gateway.dir().join("licgate.toml");
    let config = config.to_str().unwrap();
    let probe = |args: Vec<&str>| {
        let mut all = vec!["healthcheck"];
        all.extend(args);
        run_cli(&all)
    };
    assert_eq!(probe(vec!["--address", &admin]).0, 0);
    assert_eq!(probe(vec!["--ready", "--address", &admin]).0, 0);
    // Without --address: admin.listen from the configuration.
    assert_eq!(probe(vec!["--ready", "--config", config]).0, 0);

    // Nothing listening: exit 1 and the reason.
    let (code, _, err) = probe(vec!["--address", &dead_addr().to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("GET /healthz on 127.0.0.1:"), "{err}");
    // A listener that is not ready: its status is reported.
    let unready = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unready_addr = unready.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut socket, _) = unready.accept().unwrap();
        let _ = socket.read(&mut [0u8; 1024]);
        let _ = socket.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
    });
    let (code, _, err) = probe(vec!["--ready", "--address", &unready_addr]);
    assert_eq!(code, 1);
    assert!(
        err.contains("GET /readyz") && err.contains("answered 503"),
        "{err}"
    );
    // A broken configuration is reported.
    let (code, _, err) = probe(vec!["--config", "/nonexistent/licgate.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/licgate.toml"), "{err}");
}

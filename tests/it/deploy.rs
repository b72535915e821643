//! The operator files in `deploy/`, checked with the tools that can run here: hadolint
//! (Dockerfiles), the compose-spec JSON schema (docker-compose.yml), the Kubernetes
//! OpenAPI schemas (`kubernetes-validate --strict`), yamllint, `systemd-analyze verify`
//! and `systemd-analyze security`, and `licgate check` on every example configuration.
//! What no tool here checks (a Docker build, a cluster, the ServiceMonitor CRD) is
//! cross-checked by reading the files: names, ports, paths and mounts agree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::apps::venv_bin;
use crate::common::*;
use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    repo_root().join("deploy").join(path)
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every YAML document of `path`, as JSON.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";
    let out = run(&venv_bin("python"), &["-c", script, path.to_str().unwrap()]);
    assert_success(&out, "yaml to json");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A TOML document as a value.
fn toml_document(text: &str) -> toml::Value {
    toml::Value::Table(toml::from_str(text).unwrap_or_else(|e| panic!("{e}")))
}

/// The TOML file `deploy/<path>` as a value.
fn deploy_toml(path: &str) -> toml::Value {
    toml_document(&std::fs::read_to_string(deploy(path)).unwrap())
}

fn yaml(path: &str) -> Value {
    let mut docs = yaml_documents(&deploy(path));
    assert_eq!(docs.len(), 1, "{path}: one document");
    docs.remove(0)
}

#[test]
fn dockerfiles_pass_hadolint_and_copy_what_exists() {
    for file in ["Dockerfile", "compose/django.Dockerfile"] {
        let out = run(&venv_bin("hadolint"), &[deploy(file).to_str().unwrap()]);
        assert_success(&out, &format!("hadolint {file}"));
    }
    // hadolint does fail on a bad Dockerfile (the checker is live).
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "FROM debian\nRUN apt-get install curl\n").unwrap();
    assert!(!run(&venv_bin("hadolint"), &[bad.path().to_str().unwrap()])
        .status
        .success());

    let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile.split("\nFROM ").collect();
    assert!(
        stages.len() >= 3,
        "multi-stage: a build and a runtime stage"
    );
    let runtime = stages.last().unwrap();
    assert!(runtime.starts_with("gcr.io/distroless/cc-debian12:nonroot"));
    assert!(runtime.contains("\nUSER 65532:65532\n"), "non-root user");
    assert!(runtime.contains(r#"CMD ["/usr/local/bin/licgate", "healthcheck"]"#));
    assert!(runtime.contains(r#"ENTRYPOINT ["/usr/local/bin/licgate"]"#));
    // Every COPY from the build context names something that exists.
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        if line.contains("--from=") {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().skip(1).collect();
        for source in &words[..words.len() - 1] {
            assert!(
                repo_root().join(source).exists(),
                "{line}: {source} missing"
            );
        }
    }
    let ignored = std::fs::read_to_string(repo_root().join(".dockerignore")).unwrap();
    assert!(
        ignored.lines().any(|l| l == "target/"),
        "build context without target/"
    );
    // Every local crate the manifest needs (patches, workspace members) is copied in.
    let manifest: toml::Table = std::fs::read_to_string(repo_root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let mut local: Vec<String> = manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    for patch in manifest["patch"]["crates-io"].as_table().unwrap().values() {
        local.push(patch["path"].as_str().unwrap().to_string());
    }
    assert!(!local.is_empty());
    for dir in local {
        let top = dir.split('/').next().unwrap();
        assert!(
            dockerfile
                .lines()
                .any(|l| l.starts_with(&format!("COPY {top} "))
                    || l.starts_with(&format!("COPY {dir} "))),
            "the image build does not copy {dir}"
        );
    }
}

#[test]
fn compose_file_matches_the_compose_spec_and_its_files_exist() {
    let file = deploy("docker-compose.yml");
    let out = run(
        &venv_bin("check-jsonschema"),
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            file.to_str().unwrap(),
        ],
    );
    assert_success(&out, "check-jsonschema compose-spec");

    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_object().unwrap();
    assert_eq!(
        services.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from(["authority", "django", "licgate", "redis"])
    );
    // The authority runs from the same image, its config and secrets where it reads them.
    let authority = &services["authority"];
    assert_eq!(authority["build"]["dockerfile"], "deploy/Dockerfile");
    assert_eq!(
        authority["command"],
        serde_json::json!([
            "authority",
            "serve",
            "--config",
            "/etc/licgate/authority.toml"
        ])
    );
    assert_eq!(authority["read_only"], true);
    let authority_config = deploy_toml("compose/authority.toml");
    for (key, secret) in [
        (&authority_config["signing"]["key"], "vendor_signing_key"),
        (
            &authority_config["admin"]["token_file"],
            "authority_admin_token",
        ),
    ] {
        assert_eq!(
            key.as_str(),
            Some(format!("/run/secrets/{secret}").as_str())
        );
        assert!(authority["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == secret));
        assert!(compose["secrets"][secret]["file"].is_string());
    }
    assert!(authority["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v.as_str().unwrap().ends_with(":/var/lib/licgate-authority")));
    let licgate = &services["licgate"];
    assert_eq!(licgate["build"]["dockerfile"], "deploy/Dockerfile");
    assert_eq!(licgate["read_only"], true);
    assert!(licgate["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "./compose/licgate.toml:/etc/licgate/licgate.toml:ro"));
    assert!(deploy("compose/licgate.toml").exists());
    let django = &services["django"]["build"];
    let context = deploy(django["context"].as_str().unwrap());
    assert!(context.join("manage.py").exists(), "{}", context.display());
    assert!(context
        .join(django["dockerfile"].as_str().unwrap())
        .exists());
    // The gateway's config points at the compose services.
    let config = deploy_toml("compose/licgate.toml");
    assert_eq!(config["upstream"]["address"].as_str(), Some("django:8000"));
    assert_eq!(config["quota"]["backend"].as_str(), Some("redis"));
    assert_eq!(
        config["quota"]["redis"]["url"].as_str(),
        Some("redis://redis:6379")
    );
    assert_eq!(
        config["admin"]["token_file"].as_str(),
        Some("/run/secrets/licgate_admin_token")
    );
}

#[test]
fn kubernetes_manifests_validate_and_agree_with_each_other() {
    let resources = [
        "configmap.yaml",
        "secret.yaml",
        "pvc.yaml",
        "deployment.yaml",
        "service.yaml",
    ];
    let paths: Vec<String> = resources
        .iter()
        .map(|f| deploy("kubernetes").join(f).to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["--strict"];
    args.extend(paths.iter().map(String::as_str));
    let out = run(&venv_bin("kubernetes-validate"), &args);
    assert_success(&out, "kubernetes-validate --strict");
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        report.matches(" passed for resource ").count(),
        5,
        "{report}"
    );

    let kustomization = yaml("kubernetes/kustomization.yaml");
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut expected: BTreeSet<&str> = resources.into_iter().collect();
    expected.insert("servicemonitor.yaml");
    assert_eq!(listed, expected, "kustomization lists every manifest");

    let deployment = yaml("kubernetes/deployment.yaml");
    let service = yaml("kubernetes/service.yaml");
    let monitor = yaml("kubernetes/servicemonitor.yaml");
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&service["spec"]["selector"], labels);
    assert_eq!(monitor["kind"], "ServiceMonitor");
    assert_eq!(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    );

    let container = &pod["spec"]["containers"][0];
    let container_ports: BTreeSet<&str> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let service_ports: BTreeSet<&str> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(container_ports.contains(p["targetPort"].as_str().unwrap()));
            p["name"].as_str().unwrap()
        })
        .collect();
    let scraped = &monitor["spec"]["endpoints"][0];
    assert!(service_ports.contains(scraped["port"].as_str().unwrap()));
    assert_eq!(scraped["path"], "/metrics");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);

    // Volumes name the ConfigMap, Secret and claim defined beside them, and the config
    // finds its files where they are mounted.
    let configmap = yaml("kubernetes/configmap.yaml");
    let secret = yaml("kubernetes/secret.yaml");
    let pvc = yaml("kubernetes/pvc.yaml");
    let mounts: Vec<(&str, &str)> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap(),
                m["mountPath"].as_str().unwrap(),
            )
        })
        .collect();
    let mount_of = |volume: &str| {
        mounts
            .iter()
            .find(|(name, _)| *name == volume)
            .map(|(_, path)| *path)
            .unwrap_or_else(|| panic!("volume {volume} not mounted"))
    };
    for volume in pod["spec"]["volumes"].as_array().unwrap() {
        let name = volume["name"].as_str().unwrap();
        if let Some(map) = volume.get("configMap") {
            assert_eq!(map["name"], configmap["metadata"]["name"]);
            let config_path = format!("{}/licgate.toml", mount_of(name));
            assert!(container["args"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == config_path.as_str()));
        } else if let Some(s) = volume.get("secret") {
            assert_eq!(s["secretName"], secret["metadata"]["name"]);
        } else {
            let claim = &volume["persistentVolumeClaim"]["claimName"];
            assert_eq!(claim, &pvc["metadata"]["name"]);
        }
    }
    let config = toml_document(configmap["data"]["licgate.toml"].as_str().unwrap());
    let token_file = config["admin"]["token_file"].as_str().unwrap();
    let token_key = secret["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap();
    assert_eq!(
        token_file,
        format!("{}/{token_key}", mount_of("admin-token"))
    );
    assert_eq!(
        config["license"]["store_dir"].as_str().unwrap(),
        mount_of("store")
    );
    let key_path = config["license"]["public_keys"][0]["path"]
        .as_str()
        .unwrap();
    assert!(
        configmap["data"].get(key_path).is_some(),
        "{key_path} in the ConfigMap"
    );
    assert_eq!(config["quota"]["backend"].as_str(), Some("redis"));
    let replicas = deployment["spec"]["replicas"].as_i64().unwrap();
    assert_eq!(
        config["quota"]["redis"]["fleet_size"].as_integer(),
        Some(replicas)
    );
    assert!(
        pod["spec"]["terminationGracePeriodSeconds"]
            .as_i64()
            .unwrap()
            > whole_seconds(config["server"]["shutdown_timeout"].as_str().unwrap())
    );
}

/// Whole seconds of a duration such as "30s".
fn whole_seconds(text: &str) -> i64 {
    text.strip_suffix('s').unwrap().parse().unwrap()
}

#[test]
fn yaml_files_pass_yamllint() {
    let config = deploy(".yamllint");
    let out = run(
        &venv_bin("yamllint"),
        &[
            "--strict",
            "-c",
            config.to_str().unwrap(),
            deploy("").to_str().unwrap(),
        ],
    );
    assert_success(&out, "yamllint deploy/");
}

#[test]
fn the_authority_manifests_validate_and_run_two_replicas_on_postgres() {
    let dir = deploy("kubernetes/authority");
    let resources = [
        "configmap.yaml",
        "secret.yaml",
        "deployment.yaml",
        "service.yaml",
    ];
    let paths: Vec<String> = resources
        .iter()
        .map(|f| dir.join(f).to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["--strict"];
    args.extend(paths.iter().map(String::as_str));
    let out = run(&venv_bin("kubernetes-validate"), &args);
    assert_success(&out, "kubernetes-validate --strict (authority)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches(" passed for resource ")
            .count(),
        4
    );
    let kustomization = yaml("kubernetes/authority/kustomization.yaml");
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut expected: BTreeSet<&str> = resources.into_iter().collect();
    expected.insert("servicemonitor.yaml");
    assert_eq!(listed, expected);

    let deployment = yaml("kubernetes/authority/deployment.yaml");
    let service = yaml("kubernetes/authority/service.yaml");
    let monitor = yaml("kubernetes/authority/servicemonitor.yaml");
    let configmap = yaml("kubernetes/authority/configmap.yaml");
    let secret = yaml("kubernetes/authority/secret.yaml");
    assert!(deployment["spec"]["replicas"].as_i64().unwrap() >= 2);
    let pod = &deployment["spec"]["template"];
    assert_eq!(&service["spec"]["selector"], &pod["metadata"]["labels"]);
    assert_eq!(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    );
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["args"][0], "authority");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let mount = |name: &str| {
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["mountPath"].as_str().unwrap().to_string())
            .unwrap()
    };
    let config_path = format!("{}/authority.toml", mount("config"));
    assert_eq!(container["args"][3], config_path.as_str());
    let config = toml_document(configmap["data"]["authority.toml"].as_str().unwrap());
    // The PostgreSQL URL, the signing key and the admin token all come from the Secret.
    let keys = secret["stringData"].as_object().unwrap();
    assert!(keys["database-url"]
        .as_str()
        .unwrap()
        .starts_with("postgres://"));
    for path in [
        config["database_file"].as_str().unwrap(),
        config["signing"]["key"].as_str().unwrap(),
        config["admin"]["token_file"].as_str().unwrap(),
    ] {
        let (dir, key) = path.rsplit_once('/').unwrap();
        assert_eq!(dir, mount("secret"), "{path}");
        assert!(keys.contains_key(key), "{key} in the Secret");
    }
    assert!(
        config.get("database").is_none(),
        "no password in the ConfigMap"
    );
    assert_eq!(config["listen"].as_str(), Some("0.0.0.0:7700"));
}

#[test]
fn the_authority_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(deploy("systemd/licgate-authority.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("licgate-authority.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/licgate", licgate_bin())).unwrap();
    let analyze = Path::new("systemd-analyze");
    let out = run(analyze, &["verify", copy.to_str().unwrap()]);
    assert_success(&out, "systemd-analyze verify (authority)");
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(complaints.trim().is_empty(), "{complaints}");
    let out = run(
        analyze,
        &[
            "security",
            "--offline=true",
            "--threshold=20",
            "--no-pager",
            copy.to_str().unwrap(),
        ],
    );
    assert_success(&out, "systemd-analyze security --threshold=20 (authority)");
    for directive in [
        "DynamicUser=yes",
        "StateDirectory=licgate-authority",
        "ExecStart=/usr/local/bin/licgate authority serve",
        "LoadCredential=vendor.key.pem:/etc/licgate-authority/vendor.key.pem",
        "LoadCredential=admin.token:/etc/licgate-authority/admin.token",
    ] {
        assert!(unit.lines().any(|l| l == directive), "{directive}");
    }
    let config = deploy_toml("systemd/authority.toml");
    let credentials = "/run/credentials/licgate-authority.service";
    assert_eq!(
        config["signing"]["key"].as_str(),
        Some(format!("{credentials}/vendor.key.pem").as_str())
    );
    assert_eq!(
        config["admin"]["token_file"].as_str(),
        Some(format!("{credentials}/admin.token").as_str())
    );
    assert_eq!(
        config["database"].as_str(),
        Some("sqlite:///var/lib/licgate-authority/authority.db")
    );
}

/// `licgate authority check` on `text` with the files it names (signing key, admin
/// token, database URL file, SQLite directory) moved into a temporary directory.
fn check_authority_example(name: &str, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let value = toml_document(text);
    let mut text = text.to_string();
    let pair = licgate::license::keys::generate_ed25519();
    let (private, _) =
        licgate::license::keys::write_key_pair(&dir.path().join("keys"), &pair).unwrap();
    let key = value["signing"]["key"].as_str().unwrap();
    text = text.replace(&format!("\"{key}\""), &format!("\"{}\"", private.display()));
    let token = value["admin"]["token_file"].as_str().unwrap();
    let moved = dir.path().join("admin.token");
    std::fs::write(&moved, "0123456789abcdef0123456789abcdef\n").unwrap();
    text = text.replace(&format!("\"{token}\""), &format!("\"{}\"", moved.display()));
    if let Some(file) = value.get("database_file").and_then(|f| f.as_str()) {
        let moved = dir.path().join("database-url");
        std::fs::write(&moved, "postgres://licgate:secret@postgres:5432/licgate\n").unwrap();
        text = text.replace(&format!("\"{file}\""), &format!("\"{}\"", moved.display()));
    }
    let path = dir.path().join("authority.toml");
    std::fs::write(&path, &text).unwrap();
    let (code, out, err) = run_cli(&["authority", "check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{name}: {out}{err}");
}

#[test]
fn every_example_authority_configuration_passes_authority_check() {
    for file in ["systemd/authority.toml", "compose/authority.toml"] {
        check_authority_example(file, &std::fs::read_to_string(deploy(file)).unwrap());
    }
    let configmap = yaml("kubernetes/authority/configmap.yaml");
    check_authority_example(
        "kubernetes/authority/configmap.yaml",
        configmap["data"]["authority.toml"].as_str().unwrap(),
    );
    let broken = std::panic::catch_unwind(|| {
        check_authority_example(
            "broken",
            "databse = \"x\"\n[signing]\nkey = \"k\"\n[admin]\ntoken_file = \"t\"\n",
        )
    });
    assert!(broken.is_err());
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(deploy("systemd/licgate.service")).unwrap();
    // `verify` checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("licgate.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/licgate", licgate_bin())).unwrap();
    let analyze = Path::new("systemd-analyze");
    let out = run(analyze, &["verify", copy.to_str().unwrap()]);
    assert_success(&out, "systemd-analyze verify");
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(complaints.trim().is_empty(), "{complaints}");
    // The checker is live: an unknown key is reported.
    let bad = dir.path().join("bad.service");
    std::fs::write(&bad, unit.replace("Type=exec", "Typo=exec")).unwrap();
    let out = run(analyze, &["verify", bad.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unknown key 'Typo'"));

    // Exposure score (0 best, 10 worst) at most 2.0 ("OK").
    let out = run(
        analyze,
        &[
            "security",
            "--offline=true",
            "--threshold=20",
            "--no-pager",
            copy.to_str().unwrap(),
        ],
    );
    assert_success(&out, "systemd-analyze security --threshold=20");

    for directive in [
        "DynamicUser=yes",
        "StateDirectory=licgate",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LoadCredential=admin.token:/etc/licgate/admin.token",
    ] {
        assert!(unit.lines().any(|l| l == directive), "{directive}");
    }
    let config = deploy_toml("systemd/licgate.toml");
    assert_eq!(
        config["admin"]["token_file"].as_str(),
        Some("/run/credentials/licgate.service/admin.token")
    );
    assert_eq!(
        config["license"]["store_dir"].as_str(),
        Some("/var/lib/licgate")
    );
}

/// `licgate check` on `text`, with the files it names made available: key paths
/// (relative) get a real public key, absolute token and store paths are moved into
/// a temporary directory.
fn check_example(name: &str, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let value = toml_document(text);
    let mut text = text.to_string();
    if let Some(token) = value
        .get("admin")
        .and_then(|a| a.get("token_file"))
        .and_then(|t| t.as_str())
    {
        let moved = dir.path().join("admin.token");
        std::fs::write(&moved, "0123456789abcdef0123456789abcdef\n").unwrap();
        text = text.replace(&format!("\"{token}\""), &format!("\"{}\"", moved.display()));
    }
    if let Some(license) = value.get("license") {
        let store = license["store_dir"].as_str().unwrap();
        let moved = dir.path().join("store");
        text = text.replace(&format!("\"{store}\""), &format!("\"{}\"", moved.display()));
        let key = licgate::license::keys::generate_ed25519();
        for entry in license["public_keys"].as_array().unwrap() {
            let relative = entry["path"].as_str().unwrap();
            assert!(!relative.starts_with('/'), "{name}: key paths are relative");
            let written =
                licgate::license::keys::write_key_pair(&dir.path().join("keys-tmp"), &key)
                    .unwrap()
                    .1;
            let target = dir.path().join(relative);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(written, target).unwrap();
        }
    }
    let path = dir.path().join("licgate.toml");
    std::fs::write(&path, &text).unwrap();
    let (code, out, err) = run_cli(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{name}: {out}{err}");
}

#[test]
fn every_example_configuration_passes_licgate_check() {
    for file in [
        "docker/licgate.toml",
        "compose/licgate.toml",
        "systemd/licgate.toml",
    ] {
        check_example(file, &std::fs::read_to_string(deploy(file)).unwrap());
    }
    let configmap = yaml("kubernetes/configmap.yaml");
    check_example(
        "kubernetes/configmap.yaml",
        configmap["data"]["licgate.toml"].as_str().unwrap(),
    );
    // The harness does catch a broken example.
    let broken =
        std::panic::catch_unwind(|| check_example("broken", "[upstream]\nadress = \"x:1\"\n"));
    assert!(broken.is_err());
}

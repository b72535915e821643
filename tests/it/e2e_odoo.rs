//! licgate in front of a WSGI app that dispatches like Odoo 17–19
//! (`tests/e2e/odoo_like/app.py`, on werkzeug, Odoo's HTTP stack): one database per
//! host (`dbfilter = ^%d$`), `proxy_mode`, `/web/login` sessions, the web client's
//! JSON-RPC with the model in the body (the `call_kw/<path>` suffix ignored),
//! `/jsonrpc`, XML-RPC through Python's `xmlrpc.client`, JSON-2, exports, binary
//! content and reports. The app records which model each request reached
//! (`/__reached`): every test asserts what the app executed, not only what the
//! gateway answered. Odoo itself (PostgreSQL, hundreds of modules) is too heavy to
//! install for a test.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::apps::{start_odoo_like, AppProcess, Page, WebClient};
use crate::common::setup::Setup;
use crate::common::*;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Host-based tenants, Odoo models mapped to features, its assets public.
const ODOO: &str = r#"
[tenants]
mode = "host"
host_pattern = "{tenant}.erp.test"
[public]
paths = ["/web/static/", "/favicon.ico"]
[odoo]
enabled = true
max_rpc_body = 262144
[[features]]
models = ["mrp.*"]
feature = "manufacturing_module"
[[features]]
models = ["hr.*"]
feature = "hr"
[[features]]
models = ["sale.order"]
methods = ["create", "write", "unlink"]
feature = "sales_writes"
[pages]
after_activation = "/web/login"
"#;

const ADMIN_TOKEN: &str = "odoo-tests-admin-token-0123456789";

/// The models (and reports) globex's license does not cover.
fn gated_for_globex(model: &str, method: &str) -> bool {
    model.starts_with("mrp.")
        || model.starts_with("hr.")
        || (model == "sale.order" && ["create", "write", "unlink"].contains(&method))
}

/// The gateway in front of the Odoo-like app: acme has every feature, globex sales
/// only, initech no license.
struct Odoo {
    setup: Setup,
    app: AppProcess,
    gw: Gateway,
}

impl Odoo {
    async fn start() -> Odoo {
        let setup = Setup::new();
        setup.preinstall(
            &setup.token(
                "acme",
                &["sales", "manufacturing_module", "hr", "sales_writes"],
                30,
            ),
            "acme.jwt",
        );
        setup.preinstall(&setup.token("globex", &["sales"], 30), "globex.jwt");
        let app = start_odoo_like(&["acme", "globex", "initech"]);
        let token_file = setup.dir.path().join("admin.token");
        std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
        let config = BASE_CONFIG
            .replace("mode = \"off\"", "mode = \"enforce\"")
            .replace(
                "[admin]\n",
                &format!("[admin]\ntoken_file = \"{}\"\n", token_file.display()),
            )
            + &setup.license_section()
            + ODOO;
        let gw = Gateway::start_with(&config, app.addr).await;
        Odoo { setup, app, gw }
    }

    /// Everything the app dispatched so far.
    async fn reached(&self) -> Vec<Value> {
        let text = reqwest::get(format!("http://{}/__reached", self.app.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

/// The (model, method) pairs of `entries`.
fn models(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e["model"].as_str().unwrap_or("?").to_string(),
                e["method"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

/// A JSON-RPC `call_kw` as Odoo's web client sends it.
async fn call_kw(client: &WebClient, model: &str, method: &str) -> Page {
    let body = json!({"jsonrpc": "2.0", "method": "call", "id": 7,
        "params": {"model": model, "method": method, "args": [], "kwargs": {}}});
    client
        .post_json(
            &format!("/web/dataset/call_kw/{model}/{method}"),
            &body,
            &[],
        )
        .await
}

/// A JSON-2 API call with the database's API key.
async fn json2(client: &WebClient, database: &str, model: &str) -> Page {
    let key = format!("Bearer api-key-{database}");
    client
        .post_json(
            &format!("/json/2/{model}/search_read"),
            &json!({"domain": []}),
            &[("Authorization", &key)],
        )
        .await
}

/// Signs in on `/web/login` and checks the web client shows `database`.
async fn sign_in(browser: &WebClient, database: &str) {
    let first = browser.get("/web").await;
    assert_eq!(first.status, 303, "{}", first.body);
    assert_eq!(first.location(), "/web/login?redirect=/web");
    let login = browser.get(first.location()).await;
    assert_eq!(login.status, 200);
    assert!(login.body.contains(&format!("database {database}")));
    let done = browser
        .post_form(
            "/web/login?redirect=/web",
            &[("login", "admin"), ("password", "admin")],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let client = browser.get("/web").await;
    assert_eq!(client.status, 200);
    assert!(client
        .body
        .contains(&format!("database {database}, user admin")));
}

/// Asserts `page` is the JSON-RPC error object of a `code` refusal.
fn assert_rpc_refusal(page: &Page, error_code: &str) {
    assert_eq!(
        page.status, 200,
        "JSON-RPC errors are HTTP 200: {}",
        page.body
    );
    let body = page.json();
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert_eq!(body["error"]["data"]["error_code"], error_code, "{body}");
    assert!(body["error"]["data"]["name"]
        .as_str()
        .unwrap()
        .starts_with("licgate."));
    assert!(body.get("result").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_is_a_database_with_its_own_license() {
    let odoo = Odoo::start().await;
    let gw = odoo.gw.addr;

    // acme: the full product, through the app's own login and session.
    let acme = WebClient::browser("acme.erp.test", gw);
    sign_in(&acme, "acme").await;
    let production = call_kw(&acme, "mrp.production", "search_read").await;
    assert_eq!(
        production.json()["result"]["database"],
        "acme",
        "{}",
        production.body
    );
    assert_eq!(production.json()["id"], 7);
    let api = WebClient::api("acme.erp.test", gw);
    let via_json2 = json2(&api, "acme", "mrp.production").await;
    assert_eq!(via_json2.status, 200, "{}", via_json2.body);
    assert_eq!(via_json2.json()["records"][0]["name"], "WH/MO/00007");

    // globex: sales only; manufacturing and HR are refused in the web client's own
    // shape (an error object with the request's id), whatever path the call takes.
    let globex = WebClient::browser("globex.erp.test", gw);
    sign_in(&globex, "globex").await;
    let sales = call_kw(&globex, "sale.order", "search_read").await;
    assert_eq!(sales.json()["result"]["database"], "globex");
    for model in ["mrp.production", "hr.employee"] {
        let refused = call_kw(&globex, model, "search_read").await;
        assert_rpc_refusal(&refused, "FEATURE_NOT_LICENSED");
        assert_eq!(refused.json()["id"], 7);
        assert_eq!(refused.json()["error"]["code"], 403);
    }
    // A read-only plan: sale.order may be read, not written.
    let write = call_kw(&globex, "sale.order", "create").await;
    assert_rpc_refusal(&write, "FEATURE_NOT_LICENSED");
    assert_eq!(
        write.json()["error"]["data"]["required_feature"],
        "sales_writes"
    );
    let api = WebClient::api("globex.erp.test", gw);
    let refused = json2(&api, "globex", "mrp.production").await;
    assert_eq!(refused.status, 403, "JSON-2 keeps problem+json");
    assert_eq!(
        refused.json()["details"]["required_feature"],
        "manufacturing_module"
    );
    // Patterns match on dot boundaries: mrpx.order is not manufacturing.
    assert_eq!(json2(&api, "globex", "mrpx.order").await.status, 200);

    // initech has a database but no license: the web client's RPC gets an error
    // object pointing at the activation page; the browser gets the page.
    let initech = WebClient::browser("initech.erp.test", gw);
    let page = initech.get("/web").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location(), "/_licgate/activate?next=%2Fweb");
    let rpc = call_kw(&initech, "sale.order", "search_read").await;
    assert_rpc_refusal(&rpc, "LICENSE_MISSING");
    assert_eq!(
        rpc.json()["error"]["data"]["activate_url"],
        "/_licgate/activate"
    );
    let asset = initech.get("/web/static/src/css/web.css").await;
    assert_eq!(asset.status, 200);

    // Activation on initech's host lands on Odoo's login page.
    let form = initech.get("/_licgate/activate?next=%2Fweb").await;
    let csrf = form.input_value("csrf_token");
    let key = odoo.setup.token("initech", &["sales"], 30);
    let activated = initech
        .post_form(
            "/_licgate/activate",
            &[
                ("csrf_token", &csrf),
                ("next", "/web"),
                ("license_key", &key),
            ],
        )
        .await;
    assert_eq!(activated.status, 303, "{}", activated.body);
    assert_eq!(activated.location(), "/web/login");
    sign_in(&initech, "initech").await;
    let api = WebClient::api("initech.erp.test", gw);
    assert_eq!(json2(&api, "initech", "sale.order").await.status, 200);
    assert_eq!(json2(&api, "initech", "mrp.production").await.status, 403);

    // What the app executed: exactly the allowed calls, each in its own database.
    let reached: Vec<(String, String, String)> = odoo
        .reached()
        .await
        .iter()
        .map(|e| {
            (
                e["database"].as_str().unwrap().to_string(),
                e["model"].as_str().unwrap().to_string(),
                e["method"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("acme", "mrp.production", "search_read"),
        ("acme", "mrp.production", "search_read"),
        ("globex", "sale.order", "search_read"),
        ("globex", "mrpx.order", "search_read"),
        ("initech", "sale.order", "search_read"),
    ]
    .iter()
    .map(|(d, m, f)| (d.to_string(), m.to_string(), f.to_string()))
    .collect();
    assert_eq!(reached, expected);
}

/// One request, as bytes on a socket.
struct Raw {
    head: String,
    body: Vec<u8>,
}

impl Raw {
    /// A POST to `path` on `host` with `headers` (lines ending in CRLF) and `body`
    /// (`Content-Length` added unless the headers say chunked).
    fn post(host: &str, path: &str, headers: &str, body: impl Into<Vec<u8>>) -> Raw {
        let body = body.into();
        let length = if headers.to_ascii_lowercase().contains("transfer-encoding") {
            String::new()
        } else {
            format!("Content-Length: {}\r\n", body.len())
        };
        Raw {
            head: format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n{headers}{length}Connection: close\r\n\r\n"),
            body,
        }
    }

    fn get(host: &str, target: &str, headers: &str) -> Raw {
        Raw {
            head: format!(
                "GET {target} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n"
            ),
            body: Vec::new(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut bytes = self.head.clone().into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Sends the head, then the body in `pieces` packets a few milliseconds apart.
    async fn send_split(&self, addr: SocketAddr, pieces: usize) -> RawResponse {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(self.head.as_bytes()).await.unwrap();
        let size = self.body.len().div_ceil(pieces.max(1)).max(1);
        for chunk in self.body.chunks(size) {
            tokio::time::sleep(Duration::from_millis(30)).await;
            stream.write_all(chunk).await.unwrap();
        }
        read_response(&mut stream, false).await.unwrap()
    }
}

/// Chunked transfer encoding of `body` in `size`-byte chunks.
fn chunked(body: &str, size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.as_bytes().chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// An XML-RPC `execute_kw` of `model_value` (a `<value>`'s content) on the `object`
/// service with globex's credentials, as Python's `xmlrpc.client` writes it.
fn xml_call(method_name: &str, model_value: &str, method: &str) -> String {
    format!(
        "<?xml version='1.0'?>\n<methodCall>\n<methodName>{method_name}</methodName>\n<params>\n\
         <param>\n<value><string>globex</string></value>\n</param>\n\
         <param>\n<value><int>2</int></value>\n</param>\n\
         <param>\n<value><string>admin</string></value>\n</param>\n\
         <param>\n<value>{model_value}</value>\n</param>\n\
         <param>\n<value><string>{method}</string></value>\n</param>\n\
         <param>\n<value><array><data>\n</data></array></value>\n</param>\n\
         </params>\n</methodCall>\n"
    )
}

/// The body of a `call_kw` of `method` on `model`, as the web client sends it.
fn call_kw_body(model: &str, method: &str) -> String {
    json!({"jsonrpc": "2.0", "method": "call", "id": 1,
        "params": {"model": model, "method": method, "args": [], "kwargs": {}}})
    .to_string()
}

/// A `/jsonrpc` `object` call with globex's credentials.
fn jsonrpc(rpc_method: &str, model: Value, method: &str) -> String {
    json!({"jsonrpc": "2.0", "method": "call", "id": 3, "params": {
        "service": "object", "method": rpc_method,
        "args": ["globex", 2, "admin", model, method, [[]], {}]}})
    .to_string()
}

/// What a corpus case must come to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// The gateway answers; the app executes nothing.
    Refused,
    /// The app executes exactly this (allowed) model.
    Reached(&'static str),
    /// Whatever the app does, no model globex lacks is reached.
    Ungated,
}

/// The session cookie of a sign-in on `host`, through the gateway.
async fn session_cookie(gw: SocketAddr, host: &str) -> String {
    let login = Raw::post(
        host,
        "/web/login",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        "login=admin&password=admin",
    );
    let response = raw_request(gw, &login.bytes()).await.unwrap();
    let cookie = response.header("set-cookie").expect("a session cookie");
    cookie.split(';').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_bypass_corpus_reaches_no_unlicensed_model() {
    let odoo = Odoo::start().await;
    let gw = odoo.gw.addr;
    let host = "globex.erp.test";
    let cookie = format!("Cookie: {}\r\n", session_cookie(gw, host).await);
    let json_h = format!("Content-Type: application/json\r\n{cookie}");
    let kw = call_kw_body;
    let dataset = |path: &str, body: String| Raw::post(host, path, &json_h, body);
    let xml = |path: &str, body: String| Raw::post(host, path, "Content-Type: text/xml\r\n", body);
    let rpc =
        |body: String| Raw::post(host, "/jsonrpc", "Content-Type: application/json\r\n", body);
    let form = |path: &str, body: String| {
        Raw::post(
            host,
            path,
            &format!("Content-Type: application/x-www-form-urlencoded\r\n{cookie}"),
            body,
        )
    };
    let field = |name: &str, value: &str| -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair(name, value)
            .finish()
    };
    let export_data = |model: &str| {
        json!({"model": model, "fields": [{"name": "name"}], "ids": [7], "domain": [], "import_compat": false}).to_string()
    };
    let multipart = format!(
        "--B0undary\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\n{}\r\n--B0undary\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\nx\r\n--B0undary--\r\n",
        export_data("mrp.production")
    );
    let padding = "x".repeat(100 * 1024);
    let big_allowed = json!({"jsonrpc": "2.0", "method": "call", "id": 1, "params": {
        "model": "res.partner", "method": "search_read", "args": [],
        "kwargs": {"context": {"padding": padding}}}})
    .to_string();
    let oversize = json!({"params": {"model": "res.partner", "method": "read",
        "args": ["y".repeat(300 * 1024)], "kwargs": {}}})
    .to_string();

    use Expect::*;
    let cases: Vec<(&str, Raw, Expect)> = vec![
        // The web client's JSON-RPC: the model is the body's, whatever the path says.
        ("path suffix lies", dataset("/web/dataset/call_kw/res.partner/search_read", kw("mrp.production", "search_read")), Refused),
        ("no path suffix", dataset("/web/dataset/call_kw", kw("mrp.production", "read")), Refused),
        ("suffix names the gated model, body an allowed one", dataset("/web/dataset/call_kw/mrp.production/read", kw("res.partner", "read")), Reached("res.partner")),
        ("duplicate model, gated last", dataset("/web/dataset/call_kw", r#"{"params":{"model":"res.partner","model":"mrp.production","method":"read","args":[],"kwargs":{}}}"#.into()), Refused),
        ("duplicate model, gated first", dataset("/web/dataset/call_kw", r#"{"params":{"model":"mrp.production","model":"res.partner","method":"read","args":[],"kwargs":{}}}"#.into()), Refused),
        ("duplicate params", dataset("/web/dataset/call_kw", r#"{"params":{"model":"res.partner","method":"read","args":[],"kwargs":{}},"params":{"model":"mrp.production","method":"read","args":[],"kwargs":{}}}"#.into()), Refused),
        ("escaped dot", dataset("/web/dataset/call_kw", r#"{"params":{"model":"mrp\u002eproduction","method":"read","args":[],"kwargs":{}}}"#.into()), Refused),
        ("escaped letters", dataset("/web/dataset/call_kw", r#"{"params":{"model":"\u006d\u0072p.production","method":"read","args":[],"kwargs":{}}}"#.into()), Refused),
        ("nested params", dataset("/web/dataset/call_kw", r#"{"params":{"params":{"model":"mrp.production"},"model":"res.partner","method":"read","args":[],"kwargs":{}}}"#.into()), Ungated),
        ("model beside params", dataset("/web/dataset/call_kw", r#"{"model":"mrp.production","params":{"model":"res.partner","method":"read","args":[],"kwargs":{}}}"#.into()), Reached("res.partner")),
        ("batch", dataset("/web/dataset/call_kw", format!("[{}]", kw("mrp.production", "read"))), Refused),
        ("params as pairs", dataset("/web/dataset/call_kw", r#"{"params":[["model","mrp.production"],["method","read"],["args",[]],["kwargs",{}]]}"#.into()), Refused),
        ("model as a list", dataset("/web/dataset/call_kw", r#"{"params":{"model":["mrp.production"],"method":"read","args":[],"kwargs":{}}}"#.into()), Refused),
        ("trailing data", dataset("/web/dataset/call_kw", format!("{} {}", kw("res.partner", "read"), kw("mrp.production", "read"))), Refused),
        ("byte-order mark", dataset("/web/dataset/call_kw", format!("\u{feff}{}", kw("mrp.production", "read"))), Refused),
        ("NaN", dataset("/web/dataset/call_kw", r#"{"params":{"model":"res.partner","method":"read","args":[NaN],"kwargs":{}}}"#.into()), Refused),
        ("call_button", dataset("/web/dataset/call_button/x", kw("mrp.production", "action_confirm")), Refused),
        ("resequence", dataset("/web/dataset/resequence", r#"{"params":{"model":"mrp.bom.line","ids":[1,2]}}"#.into()), Refused),
        ("a write on a read-only plan", dataset("/web/dataset/call_kw", kw("sale.order", "create")), Refused),
        ("a read on a read-only plan", dataset("/web/dataset/call_kw", kw("sale.order", "search_read")), Reached("sale.order")),
        ("case of the model", dataset("/web/dataset/call_kw", kw("MRP.production", "read")), Ungated),
        ("a lookalike model", dataset("/web/dataset/call_kw", kw("mrpx.order", "read")), Reached("mrpx.order")),
        ("trailing slash", dataset("/web/dataset/call_kw/", kw("mrp.production", "read")), Refused),
        ("double slash", dataset("/web/dataset//call_kw", kw("mrp.production", "read")), Refused),
        ("encoded underscore", dataset("/web/dataset/call%5Fkw", kw("mrp.production", "read")), Refused),
        ("text/plain", Raw::post(host, "/web/dataset/call_kw", &format!("Content-Type: text/plain\r\n{cookie}"), kw("mrp.production", "read")), Refused),
        ("no Content-Type", Raw::post(host, "/web/dataset/call_kw", &cookie, kw("mrp.production", "read")), Refused),
        ("another charset", Raw::post(host, "/web/dataset/call_kw", &format!("Content-Type: application/json; charset=utf-16\r\n{cookie}"), kw("res.partner", "read")), Refused),
        ("Content-Encoding gzip", Raw::post(host, "/web/dataset/call_kw", &format!("Content-Encoding: gzip\r\n{json_h}"), kw("res.partner", "read")), Refused),
        ("oversize", dataset("/web/dataset/call_kw", oversize), Refused),
        ("chunked, gated", Raw::post(host, "/web/dataset/call_kw", &format!("Transfer-Encoding: chunked\r\n{json_h}"), chunked(&kw("mrp.production", "read"), 7)), Refused),
        ("chunked, allowed", Raw::post(host, "/web/dataset/call_kw", &format!("Transfer-Encoding: chunked\r\n{json_h}"), chunked(&kw("res.partner", "read"), 7)), Reached("res.partner")),
        ("over 64 KiB, allowed", dataset("/web/dataset/call_kw", big_allowed), Reached("res.partner")),
        // /jsonrpc: the model is args[3].
        ("jsonrpc execute_kw", rpc(jsonrpc("execute_kw", json!("mrp.production"), "search_read")), Refused),
        ("jsonrpc execute", rpc(jsonrpc("execute", json!("hr.employee"), "read")), Refused),
        ("jsonrpc allowed", rpc(jsonrpc("execute_kw", json!("res.partner"), "read")), Reached("res.partner")),
        ("jsonrpc model not a string", rpc(jsonrpc("execute_kw", json!(["mrp.production"]), "read")), Refused),
        ("jsonrpc unknown service method", rpc(jsonrpc("exec_workflow", json!("mrp.production"), "read")), Refused),
        ("jsonrpc args as an object", rpc(r#"{"params":{"service":"object","method":"execute_kw","args":{"3":"mrp.production"}}}"#.into()), Refused),
        // XML-RPC, read as Python's xmlrpc.client reads it.
        ("xmlrpc string", xml("/xmlrpc/2/object", xml_call("execute_kw", "<string>mrp.production</string>", "read")), Refused),
        ("xmlrpc bare value", xml("/xmlrpc/2/object", xml_call("execute_kw", "mrp.production", "read")), Refused),
        ("xmlrpc execute", xml("/xmlrpc/2/object", xml_call("execute", "hr.employee", "read")), Refused),
        ("xmlrpc legacy path", xml("/xmlrpc/object", xml_call("execute_kw", "mrp.production", "read")), Refused),
        ("xmlrpc comment inside", xml("/xmlrpc/2/object", xml_call("execute_kw", "<string>mrp<!-- x -->.production</string>", "read")), Refused),
        ("xmlrpc CDATA", xml("/xmlrpc/2/object", xml_call("execute_kw", "<![CDATA[mrp.]]>production", "read")), Refused),
        ("xmlrpc character reference", xml("/xmlrpc/2/object", xml_call("execute_kw", "mrp&#46;production", "read")), Refused),
        ("xmlrpc whitespace around the type", xml("/xmlrpc/2/object", xml_call("execute_kw", "\n  <string>mrp.production</string>\n", "read")), Refused),
        ("xmlrpc entity declaration", xml("/xmlrpc/2/object", xml_call("execute_kw", "&m;", "read").replacen("<methodCall>", "<!DOCTYPE methodCall [<!ENTITY m 'mrp.production'>]>\n<methodCall>", 1)), Refused),
        ("xmlrpc external entity", xml("/xmlrpc/2/object", xml_call("execute_kw", "&m;", "read").replacen("<methodCall>", "<!DOCTYPE methodCall [<!ENTITY m SYSTEM 'file:///etc/hostname'>]>\n<methodCall>", 1)), Refused),
        ("xmlrpc namespaced type", xml("/xmlrpc/2/object", xml_call("execute_kw", "<x:string xmlns:x='urn:x'>mrp.production</x:string>", "read")), Refused),
        ("xmlrpc declared encoding", xml("/xmlrpc/2/object", xml_call("execute_kw", "res.partner", "read").replacen("<?xml version='1.0'?>", "<?xml version='1.0' encoding='iso-8859-1'?>", 1)), Refused),
        ("xmlrpc two method names", xml("/xmlrpc/2/object", xml_call("execute_kw", "res.partner", "read").replacen("<methodName>execute_kw</methodName>", "<methodName>execute_kw</methodName><methodName>execute_kw</methodName>", 1)), Refused),
        ("xmlrpc value outside a param", xml("/xmlrpc/2/object", xml_call("execute_kw", "res.partner", "read").replacen("<params>", "<params><value>x</value>", 1)), Refused),
        ("xmlrpc allowed", xml("/xmlrpc/2/object", xml_call("execute_kw", "<string>res.partner</string>", "read")), Reached("res.partner")),
        ("xmlrpc as a form", Raw::post(host, "/xmlrpc/2/object", "Content-Type: application/x-www-form-urlencoded\r\n", xml_call("execute_kw", "mrp.production", "read")), Refused),
        // JSON-2: the model is the path's.
        ("json2", Raw::post(host, "/json/2/mrp.production/search_read", "Content-Type: application/json\r\nAuthorization: bearer api-key-globex\r\n", "{}"), Refused),
        ("json2 encoded dot", Raw::post(host, "/json/2/mrp%2Eproduction/search_read", "Content-Type: application/json\r\nAuthorization: bearer api-key-globex\r\n", "{}"), Refused),
        // HTTP routes naming models.
        ("export, multipart", Raw::post(host, "/web/export/xlsx", &format!("Content-Type: multipart/form-data; boundary=B0undary\r\n{cookie}"), multipart), Refused),
        ("export, form", form("/web/export/csv", field("data", &export_data("mrp.production"))), Refused),
        ("export, data twice", form("/web/export/csv", format!("{}&{}", field("data", &export_data("res.partner")), field("data", &export_data("mrp.production")))), Refused),
        ("export, allowed", form("/web/export/csv", field("data", &export_data("res.partner"))), Reached("res.partner")),
        ("content by path", Raw::get(host, "/web/content/mrp.production/7/image", &cookie), Refused),
        ("content by parameter", Raw::get(host, "/web/content/42?model=mrp.production&field=image", &cookie), Refused),
        ("image by parameter", Raw::get(host, "/web/image/42?model=hr.employee", &cookie), Refused),
        ("content, allowed", Raw::get(host, "/web/content/res.partner/3/image", &cookie), Reached("res.partner")),
        ("content, default model", Raw::get(host, "/web/content/42", &cookie), Reached("ir.attachment")),
        ("report", Raw::get(host, "/report/pdf/mrp.report_mrporder/7", &cookie), Refused),
        ("report download", form("/report/download", field("data", r#"["/report/pdf/mrp.report_mrporder/7","qweb-pdf"]"#)), Refused),
        ("report, allowed", Raw::get(host, "/report/pdf/sale.report_saleorder/1", &cookie), Reached("sale.report_saleorder")),
    ];
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut seen = odoo.reached().await.len();
    for (i, (name, request, expect)) in cases.iter().enumerate() {
        let response = if name.starts_with("chunked") || *name == "path suffix lies" {
            request.send_split(gw, 3).await
        } else {
            raw_request(gw, &request.bytes()).await.unwrap()
        };
        let reached = odoo.reached().await;
        let new = models(&reached[seen..]);
        seen = reached.len();
        for (model, method) in &new {
            assert!(
                !gated_for_globex(model, method),
                "case {i} ({name}): the app executed {model}.{method} for globex; gateway said {} {}",
                response.status,
                response.text()
            );
        }
        match expect {
            Refused => assert!(
                new.is_empty(),
                "case {i} ({name}) reached {new:?}: {} {}",
                response.status,
                response.text()
            ),
            Reached(model) => assert_eq!(
                new.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
                vec![*model],
                "case {i} ({name}): {} {}",
                response.status,
                response.text()
            ),
            Ungated => {}
        }
        if *expect == Refused {
            // Every refusal is the gateway's own answer, in the endpoint's dialect.
            let text = response.text();
            assert!(
                text.contains("error_code") || text.contains("<fault>"),
                "case {i} ({name}): {} {text}",
                response.status
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_rpc_callers_get_faults_and_usage_counts_by_model() {
    let odoo = Odoo::start().await;
    let gw = odoo.gw.addr;
    let request = Raw::post(
        "globex.erp.test",
        "/xmlrpc/2/object",
        "Content-Type: text/xml\r\n",
        xml_call("execute_kw", "<string>mrp.production</string>", "read"),
    );
    let fault = raw_request(gw, &request.bytes()).await.unwrap();
    assert_eq!(fault.status, 200);
    assert!(fault
        .header("content-type")
        .unwrap()
        .starts_with("text/xml"));
    let text = fault.text();
    assert!(
        text.contains("<fault>") && text.contains("FEATURE_NOT_LICENSED"),
        "{text}"
    );
    assert!(text.contains("<int>403</int>"), "{text}");
    let bad = Raw::post(
        "globex.erp.test",
        "/xmlrpc/2/object",
        "Content-Type: text/xml\r\n",
        "<!DOCTYPE x [<!ENTITY a 'b'>]><methodCall/>",
    );
    let refused = raw_request(gw, &bad.bytes()).await.unwrap();
    assert!(
        refused.text().contains("<int>400</int>"),
        "{}",
        refused.text()
    );
    // An allowed XML-RPC call comes back as the app's own response.
    let ok = Raw::post(
        "acme.erp.test",
        "/xmlrpc/2/object",
        "Content-Type: text/xml\r\n",
        xml_call("execute_kw", "mrp.production", "read").replace("globex", "acme"),
    );
    let answered = raw_request(gw, &ok.bytes()).await.unwrap();
    assert!(
        answered.text().contains("WH/MO/00007"),
        "{}",
        answered.text()
    );
    assert_eq!(
        models(&odoo.reached().await),
        vec![("mrp.production".to_string(), "read".to_string())]
    );
    // The ledger counts the call under its model's feature.
    let usage = eventually_usage(&odoo.gw, ADMIN_TOKEN, "acme", "manufacturing_module").await;
    assert!(usage >= 1, "{usage}");
}

/// The allowed count of `feature` in `tenant`'s usage today, once the ledger has it.
async fn eventually_usage(gw: &Gateway, token: &str, tenant: &str, feature: &str) -> u64 {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let response = client
            .get(format!(
                "http://{}/admin/v1/tenants/{tenant}/usage",
                gw.admin
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        let allowed = body["features"][feature]["allowed"].as_u64().unwrap_or(0);
        if allowed > 0 {
            return allowed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_expects_100_continue_gets_it_before_the_body_is_read() {
    use tokio::io::AsyncReadExt;
    let odoo = Odoo::start().await;
    let body = jsonrpc("execute_kw", json!("res.partner"), "read");
    let request = Raw::post(
        "globex.erp.test",
        "/jsonrpc",
        "Content-Type: application/json\r\nExpect: 100-continue\r\n",
        body,
    );
    let mut stream = TcpStream::connect(odoo.gw.addr).await.unwrap();
    stream.write_all(request.head.as_bytes()).await.unwrap();
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while !interim.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            interim.push(byte[0]);
        }
    })
    .await;
    assert!(waited.is_ok(), "no interim response: {interim:?}");
    let interim = String::from_utf8_lossy(&interim);
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    stream.write_all(&request.body).await.unwrap();
    let response = read_response(&mut stream, false).await.unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json()["result"]["model"],
        "res.partner",
        "{}",
        response.text()
    );
    assert_eq!(
        models(&odoo.reached().await),
        vec![("res.partner".to_string(), "read".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_point_serves_a_licensed_model() {
    let odoo = Odoo::start().await;
    let gw = odoo.gw.addr;
    let host = "acme.erp.test";
    let cookie = format!("Cookie: {}\r\n", session_cookie(gw, host).await);
    let json_h = format!("Content-Type: application/json\r\n{cookie}");
    let kw = call_kw_body;
    let acme = |body: String| {
        body.replace("\"globex\"", "\"acme\"")
            .replace(">globex<", ">acme<")
    };
    let form = |path: &str, name: &str, value: &str| {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair(name, value)
            .finish();
        Raw::post(
            host,
            path,
            &format!("Content-Type: application/x-www-form-urlencoded\r\n{cookie}"),
            body,
        )
    };
    let cases: Vec<(&str, Raw, &str)> = vec![
        (
            "call_kw",
            Raw::post(
                host,
                "/web/dataset/call_kw/mrp.production/read",
                &json_h,
                kw("mrp.production", "read"),
            ),
            "mrp.production",
        ),
        (
            "call_button",
            Raw::post(
                host,
                "/web/dataset/call_button",
                &json_h,
                kw("mrp.production", "action_confirm"),
            ),
            "mrp.production",
        ),
        (
            "resequence",
            Raw::post(
                host,
                "/web/dataset/resequence",
                &json_h,
                r#"{"params":{"model":"mrp.bom.line","ids":[1]}}"#,
            ),
            "mrp.bom.line",
        ),
        (
            "jsonrpc execute_kw",
            Raw::post(
                host,
                "/jsonrpc",
                "Content-Type: application/json\r\n",
                acme(jsonrpc("execute_kw", json!("mrp.production"), "read")),
            ),
            "mrp.production",
        ),
        (
            "jsonrpc execute",
            Raw::post(
                host,
                "/jsonrpc",
                "Content-Type: application/json\r\n",
                acme(jsonrpc("execute", json!("hr.employee"), "read")),
            ),
            "hr.employee",
        ),
        (
            "xmlrpc/2",
            Raw::post(
                host,
                "/xmlrpc/2/object",
                "Content-Type: text/xml\r\n",
                acme(xml_call("execute_kw", "mrp.production", "read")),
            ),
            "mrp.production",
        ),
        (
            "xmlrpc",
            Raw::post(
                host,
                "/xmlrpc/object",
                "Content-Type: text/xml\r\n",
                acme(xml_call("execute", "<string>hr.employee</string>", "read")),
            ),
            "hr.employee",
        ),
        (
            "json2",
            Raw::post(
                host,
                "/json/2/mrp.production/search_read",
                "Content-Type: application/json\r\nAuthorization: bearer api-key-acme\r\n",
                "{}",
            ),
            "mrp.production",
        ),
        (
            "export",
            form(
                "/web/export/csv",
                "data",
                r#"{"model":"mrp.production","fields":[],"ids":[],"domain":[],"import_compat":false}"#,
            ),
            "mrp.production",
        ),
        (
            "content",
            Raw::get(host, "/web/content/mrp.production/7/image", &cookie),
            "mrp.production",
        ),
        (
            "image",
            Raw::get(host, "/web/image/42?model=hr.employee", &cookie),
            "hr.employee",
        ),
        (
            "report",
            Raw::get(host, "/report/pdf/mrp.report_mrporder/7", &cookie),
            "mrp.report_mrporder",
        ),
        (
            "report download",
            form(
                "/report/download",
                "data",
                r#"["/report/pdf/mrp.report_mrporder/7","qweb-pdf"]"#,
            ),
            "mrp.report_mrporder",
        ),
    ];
    let mut seen = odoo.reached().await.len();
    for (name, request, model) in cases {
        let response = raw_request(gw, &request.bytes()).await.unwrap();
        let reached = odoo.reached().await;
        let new = models(&reached[seen..]);
        seen = reached.len();
        assert_eq!(
            new.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
            vec![model],
            "{name}: {} {}",
            response.status,
            response.text()
        );
        assert!(
            !response.text().contains("licgate."),
            "{name}: the app's own answer, not a refusal: {}",
            response.text()
        );
    }
}

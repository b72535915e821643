//! Cost of reading an Odoo call's model before the decision: a 1 KB JSON-RPC `call_kw`
//! (the web client's shape) and the same call over XML-RPC, read strictly, then the
//! model matched against a feature map of 40 model rules. The body read itself is the
//! gateway's buffering (`load/run --rpc` measures the whole request).
//!
//! `cargo bench --bench odoo`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use licgate::policy::model::{ModelMap, ModelPattern, ModelRule};
use licgate::policy::odoo::{reached, Endpoint, RequestParts};

/// The web client's `search_read` on `sale.order`, padded to 1 KB.
fn call_kw_body() -> String {
    let fields: Vec<String> = (0..60).map(|i| format!("\"field_{i:02}\"")).collect();
    let mut body = format!(
        r#"{{"jsonrpc":"2.0","method":"call","id":1,"params":{{"model":"sale.order","method":"search_read","args":[],"kwargs":{{"domain":[["state","in",["sale","done"]]],"fields":[{}],"limit":80,"context":{{"lang":"en_US","tz":"Europe/Brussels","uid":2}}}}}}}}"#,
        fields.join(",")
    );
    while body.len() < 1024 {
        body.push(' ');
    }
    body
}

fn xmlrpc_body() -> String {
    let param = |v: &str| format!("<param>\n<value>{v}</value>\n</param>\n");
    let fields: String = (0..40)
        .map(|i| format!("<value><string>field_{i:02}</string></value>"))
        .collect();
    format!(
        "<?xml version='1.0'?>\n<methodCall>\n<methodName>execute_kw</methodName>\n<params>\n{}{}{}{}{}{}{}</params>\n</methodCall>\n",
        param("<string>acme</string>"),
        param("<int>2</int>"),
        param("<string>secret</string>"),
        param("<string>sale.order</string>"),
        param("<string>search_read</string>"),
        param("<array><data><value><array><data/></array></value></data></array>"),
        param(&format!("<struct><member><name>fields</name><value><array><data>{fields}</data></array></value></member></struct>")),
    )
}

fn model_map() -> ModelMap {
    let modules = [
        "account", "crm", "hr", "mrp", "project", "purchase", "quality", "sale", "stock", "website",
    ];
    let mut rules = Vec::new();
    for (i, module) in modules.iter().enumerate() {
        for pattern in [
            format!("{module}.*"),
            format!("{module}.order"),
            format!("{module}.line.*"),
            format!("{module}.report_{i}"),
        ] {
            rules.push(ModelRule {
                pattern: ModelPattern::parse(&pattern).unwrap(),
                feature: Arc::from(*module),
                methods: None,
                shadow: false,
            });
        }
    }
    ModelMap::new(rules)
}

fn read_and_match(c: &mut Criterion) {
    let map = model_map();
    let json = call_kw_body();
    let xml = xmlrpc_body();
    let mut group = c.benchmark_group("odoo");
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("json-rpc call_kw 1 KB: read + match", |b| {
        b.iter(|| {
            let found = reached(
                Endpoint::Dataset,
                RequestParts {
                    path: "/web/dataset/call_kw/sale.order/search_read",
                    query: None,
                    content_type: Some("application/json"),
                    body: black_box(json.as_bytes()),
                },
            )
            .unwrap();
            let call = found.call.unwrap();
            black_box(map.rule_for(&call.model, &call.method).is_some())
        })
    });
    group.throughput(Throughput::Bytes(xml.len() as u64));
    group.bench_function(
        format!("xml-rpc execute_kw {} B: read + match", xml.len()),
        |b| {
            b.iter(|| {
                let found = reached(
                    Endpoint::XmlRpc,
                    RequestParts {
                        path: "/xmlrpc/2/object",
                        query: None,
                        content_type: Some("text/xml"),
                        body: black_box(xml.as_bytes()),
                    },
                )
                .unwrap();
                let call = found.call.unwrap();
                black_box(map.rule_for(&call.model, &call.method).is_some())
            })
        },
    );
    group.bench_function("model match only (40 rules)", |b| {
        b.iter(|| {
            black_box(
                map.rule_for(black_box("sale.order.line"), "write")
                    .is_some(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, read_and_match);
criterion_main!(benches);

use super::*;

fn parts<'a>(
    path: &'a str,
    query: Option<&'a str>,
    content_type: Option<&'a str>,
    body: &'a [u8],
) -> RequestParts<'a> {
    RequestParts {
        path,
        query,
        content_type,
        body,
    }
}

fn model_of(
    endpoint: Endpoint,
    parts: RequestParts<'_>,
) -> Result<Option<(String, String)>, RpcRefusal> {
    reached(endpoint, parts).map(|r| r.call.map(|c| (c.model, c.method)))
}

fn some(model: &str, method: &str) -> Result<Option<(String, String)>, RpcRefusal> {
    Ok(Some((model.into(), method.into())))
}

#[test]
fn endpoints_are_found_by_path() {
    for (path, want) in [
        ("/web/dataset/call_kw", Some(Endpoint::Dataset)),
        (
            "/web/dataset/call_kw/res.partner/search_read",
            Some(Endpoint::Dataset),
        ),
        ("/web/dataset/call_button", Some(Endpoint::Dataset)),
        ("/web/dataset/resequence", Some(Endpoint::Dataset)),
        ("/web/dataset/call_kwx", None),
        ("/jsonrpc", Some(Endpoint::JsonRpc)),
        ("/xmlrpc/2/object", Some(Endpoint::XmlRpc)),
        ("/xmlrpc/object", Some(Endpoint::XmlRpc)),
        ("/xmlrpc/2/common", None),
        ("/json/2/mrp.production/search_read", Some(Endpoint::Json2)),
        ("/web/export/xlsx", Some(Endpoint::Export)),
        (
            "/web/content/mrp.production/7/image",
            Some(Endpoint::Content),
        ),
        ("/web/image", Some(Endpoint::Content)),
        ("/report/pdf/mrp.report_mrporder/7", Some(Endpoint::Report)),
        ("/report/download", Some(Endpoint::ReportDownload)),
        ("/web/login", None),
    ] {
        assert_eq!(endpoint(path), want, "{path}");
    }
    let post = http::Method::POST;
    assert_eq!(
        dialect("/web/dataset/call_kw", &post, None),
        Some(Dialect::JsonRpc)
    );
    assert_eq!(
        dialect("/xmlrpc/2/common", &post, None),
        Some(Dialect::XmlRpc)
    );
    assert_eq!(
        dialect("/mail/thread/data", &post, Some("application/json")),
        Some(Dialect::JsonRpc)
    );
    assert_eq!(
        dialect("/json/2/a.b/read", &post, Some("application/json")),
        None
    );
    assert_eq!(dialect("/web/login", &http::Method::GET, None), None);
}

#[test]
fn json_rpc_needs_a_json_body_and_keeps_its_id() {
    let body = br#"{"jsonrpc":"2.0","method":"call","params":{"model":"mrp.production","method":"read","args":[[1]],"kwargs":{}},"id":42}"#;
    let got = reached(
        Endpoint::Dataset,
        parts(
            "/web/dataset/call_kw/res.partner/read",
            None,
            Some("application/json"),
            body,
        ),
    )
    .unwrap();
    assert_eq!(
        got.call.unwrap().model,
        "mrp.production",
        "the path suffix is ignored"
    );
    assert_eq!(got.id, Some(serde_json::json!(42)));
    for ct in [
        None,
        Some("text/plain"),
        Some("application/json; charset=latin-1"),
        Some("application/x-www-form-urlencoded"),
    ] {
        assert!(
            matches!(
                reached(
                    Endpoint::Dataset,
                    parts("/web/dataset/call_kw", None, ct, body)
                ),
                Err(RpcRefusal::MediaType(_))
            ),
            "{ct:?}"
        );
    }
    assert!(reached(
        Endpoint::Dataset,
        parts(
            "/web/dataset/call_kw",
            None,
            Some("application/json; charset=UTF-8"),
            body
        )
    )
    .is_ok());
}

#[test]
fn paths_name_models_for_json2_content_and_reports() {
    let none = |path| parts(path, None, None, b"");
    assert_eq!(
        model_of(Endpoint::Json2, none("/json/2/mrp.production/search_read")),
        some("mrp.production", "search_read")
    );
    assert!(model_of(Endpoint::Json2, none("/json/2/mrp.production")).is_err());
    assert!(model_of(Endpoint::Json2, none("/json/2/mrp%2Eproduction/read")).is_err());
    assert_eq!(
        model_of(
            Endpoint::Content,
            none("/web/content/mrp.production/7/image")
        ),
        some("mrp.production", "read")
    );
    assert_eq!(
        model_of(
            Endpoint::Content,
            none("/web/image/mrp.production/7/image_128/100x100")
        ),
        some("mrp.production", "read")
    );
    assert_eq!(
        model_of(Endpoint::Content, none("/web/content/42")),
        some("ir.attachment", "read")
    );
    assert_eq!(
        model_of(
            Endpoint::Content,
            parts(
                "/web/content/42",
                Some("model=mrp.production&field=x"),
                None,
                b""
            )
        ),
        some("mrp.production", "read"),
        "Odoo takes the model from the query when the path has none"
    );
    for (path, query, content_type, body, why) in [
        (
            "/web/content",
            Some("model=a.b&model=mrp.production"),
            None,
            &b""[..],
            "a parameter twice",
        ),
        (
            "/web/content/res.partner/1/x",
            Some("model=mrp.production"),
            None,
            b"",
            "path and parameter differ",
        ),
        (
            "/web/content",
            None,
            Some("application/x-www-form-urlencoded"),
            b"model=mrp.production",
            "a body",
        ),
    ] {
        assert!(
            model_of(Endpoint::Content, parts(path, query, content_type, body)).is_err(),
            "{why}"
        );
    }
    assert_eq!(
        model_of(Endpoint::Report, none("/report/pdf/mrp.report_mrporder/7")),
        some("mrp.report_mrporder", "report")
    );
    assert!(model_of(Endpoint::Report, none("/report/pdf")).is_err());
}

#[test]
fn forms_are_read_strictly() {
    let data = r#"{"model":"mrp.production","fields":[{"name":"name"}],"ids":[7],"domain":[],"import_compat":false}"#;
    let urlencoded: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("data", data)
        .finish();
    let form = "application/x-www-form-urlencoded";
    assert_eq!(
        model_of(
            Endpoint::Export,
            parts("/web/export/csv", None, Some(form), urlencoded.as_bytes())
        ),
        some("mrp.production", "export_data")
    );
    assert_eq!(
        model_of(
            Endpoint::Export,
            parts("/web/export/csv", Some(&urlencoded), None, b"")
        ),
        some("mrp.production", "export_data")
    );
    let twice = format!(
        "{urlencoded}&{}",
        urlencoded.replace("mrp.production", "res.partner")
    );
    assert!(model_of(
        Endpoint::Export,
        parts("/web/export/csv", None, Some(form), twice.as_bytes())
    )
    .is_err());
    assert!(
        model_of(
            Endpoint::Export,
            parts(
                "/web/export/csv",
                Some(&urlencoded),
                Some(form),
                urlencoded.as_bytes()
            )
        )
        .is_err(),
        "query and form"
    );
    let multipart = |disposition: &str| {
        format!("--XyZ\r\nContent-Disposition: form-data; name=\"token\"\r\n\r\ndummy\r\n--XyZ\r\nContent-Disposition: {disposition}\r\n\r\n{data}\r\n--XyZ--\r\n")
    };
    let mp = "multipart/form-data; boundary=XyZ";
    assert_eq!(
        model_of(
            Endpoint::Export,
            parts(
                "/web/export/xlsx",
                None,
                Some(mp),
                multipart("form-data; name=\"data\"").as_bytes()
            )
        ),
        some("mrp.production", "export_data")
    );
    for bad in [
        "form-data; name=\"data\"; filename=\"x.json\"",
        "form-data; name*=utf-8''data",
        "form-data; name=\"da\\\"ta\"",
        "attachment; name=\"data\"",
    ] {
        assert!(
            model_of(
                Endpoint::Export,
                parts(
                    "/web/export/xlsx",
                    None,
                    Some(mp),
                    multipart(bad).as_bytes()
                )
            )
            .is_err(),
            "{bad}"
        );
    }
    assert!(
        model_of(
            Endpoint::Export,
            parts(
                "/web/export/xlsx",
                None,
                Some("multipart/form-data"),
                multipart("form-data; name=\"data\"").as_bytes()
            )
        )
        .is_err(),
        "no boundary"
    );
    assert!(model_of(
        Endpoint::Export,
        parts("/web/export/xlsx", None, Some("text/plain"), b"data=x")
    )
    .is_err());
}

#[test]
fn report_downloads_name_their_report_in_a_url() {
    let form = "application/x-www-form-urlencoded";
    let body = |data: &str| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("data", data)
            .append_pair("context", "{}")
            .finish()
    };
    let read = |data: &str| {
        model_of(
            Endpoint::ReportDownload,
            parts("/report/download", None, Some(form), body(data).as_bytes()),
        )
    };
    assert_eq!(
        read(r#"["/report/pdf/mrp.report_mrporder/7,8","qweb-pdf"]"#),
        some("mrp.report_mrporder", "report")
    );
    assert_eq!(
        read(r#"["/report/text/stock.label?x=1","qweb-text"]"#),
        some("stock.label", "report")
    );
    assert_eq!(
        read(r#"["/x/report/pdf/mrp.a/1","qweb-pdf"]"#),
        some("mrp.a", "report"),
        "the first occurrence, as split() takes it"
    );
    for bad in [
        r#"["/report/pdf/mrp.a","qweb-html"]"#,
        r#"["/report/html/mrp.a","qweb-pdf"]"#,
        r#"{"url":"/report/pdf/a"}"#,
        r#"["/report/pdf/mrp%2Ea/1","qweb-pdf"]"#,
    ] {
        assert!(read(bad).is_err(), "{bad}");
    }
}

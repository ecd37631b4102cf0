//! The HTTP API against a real node on 127.0.0.1:0 with a temp data dir, through a real HTTP
//! client: every route of docs/http-api.md, and each of its error cases.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cfgnode_tests::SingleNode;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

const ENVELOPE: &str = "application/vnd.cfgnode.entry+json";

async fn assert_error(resp: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(resp.status(), status, "expected {status} {code}");
    let body: Value = resp.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_auth() {
    let n = SingleNode::start().await;
    let health = n
        .http
        .get(format!("{}/health", n.base))
        .send()
        .await
        .expect("send");
    assert_eq!(health.status(), StatusCode::OK);
    let ready = n
        .http
        .get(format!("{}/ready", n.base))
        .send()
        .await
        .expect("send");
    assert_eq!(ready.status(), StatusCode::OK);

    let no_token = n
        .http
        .get(format!("{}/v1/namespaces", n.base))
        .send()
        .await
        .expect("send");
    assert_eq!(
        no_token
            .headers()
            .get("www-authenticate")
            .map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    assert_error(no_token, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let wrong = n
        .http
        .put(format!("{}/v1/namespaces/a/keys/k", n.base))
        .bearer_auth("not-the-token")
        .body("x")
        .send()
        .await
        .expect("send");
    assert_error(wrong, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    // The refused write changed nothing.
    let missing = n.get("/v1/namespaces/a/keys/k").send().await.expect("send");
    assert_error(missing, StatusCode::NOT_FOUND, "key_not_found").await;
    let metrics = n
        .http
        .get(format!("{}/metrics", n.base))
        .send()
        .await
        .expect("send");
    assert_eq!(metrics.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_commits() {
    let n = SingleNode::start().await;
    n.put_json("app", "k", json!({"a": 1})).await;
    let text = n.metrics().await;
    assert!(
        text.contains(r#"route="/v1/namespaces/{ns}/keys/{*key}""#)
            && text.contains("cfgnode_http_requests_total"),
        "{text}"
    );
    assert!(
        text.contains(r#"cfgnode_storage_commits_total{node="#),
        "{text}"
    );
    assert!(
        text.contains("cfgnode_storage_commit_batch_size_count"),
        "{text}"
    );
    assert!(text.contains("cfgnode_up"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_and_read_a_key_as_json_and_raw() {
    let n = SingleNode::start().await;
    let meta = n.put_json("app", "db/config", json!({"port": 5432})).await;
    assert_eq!(meta["version"], 1);
    assert_eq!(meta["revision"], 1);
    assert_eq!(meta["codec"], "json");
    assert!(meta.get("value").is_none(), "write answers carry no value");

    let resp = n
        .get("/v1/namespaces/app/keys/db/config")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.headers()["etag"], "\"1\"");
    let entry: Value = resp.json().await.expect("json");
    assert_eq!(entry["namespace"], "app");
    assert_eq!(entry["key"], "db/config");
    assert_eq!(entry["value"], b64(br#"{"port":5432}"#));
    assert_eq!(entry["version"], 1);
    assert!(
        entry["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(entry["created_at"], entry["updated_at"]);

    let meta2 = n.put_json("app", "db/config", json!({"port": 6432})).await;
    assert_eq!(meta2["version"], 2);
    assert_eq!(meta2["revision"], 2);
    assert_eq!(meta2["created_at"], meta["created_at"]);

    for raw in [
        n.get("/v1/namespaces/app/keys/db/config?raw=true"),
        n.get("/v1/namespaces/app/keys/db/config")
            .header("accept", "application/octet-stream"),
    ] {
        let resp = raw.send().await.expect("send");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.headers()["etag"], "\"2\"");
        assert_eq!(resp.headers()["x-cfgnode-version"], "2");
        assert_eq!(resp.headers()["x-cfgnode-revision"], "2");
        assert_eq!(
            resp.bytes().await.expect("body").as_ref(),
            br#"{"port":6432}"#
        );
    }

    let unchanged = n
        .get("/v1/namespaces/app/keys/db/config")
        .header("if-none-match", "\"2\"")
        .send()
        .await
        .expect("send");
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    let stale = n
        .get("/v1/namespaces/app/keys/db/config")
        .header("if-none-match", "\"1\"")
        .send()
        .await
        .expect("send");
    assert_eq!(stale.status(), StatusCode::OK);

    let post = n
        .request(Method::POST, "/v1/namespaces/app/keys/greeting")
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .expect("send");
    assert_eq!(post.status(), StatusCode::OK);
    let raw = n
        .get("/v1/namespaces/app/keys/greeting?raw=true")
        .send()
        .await
        .expect("send");
    assert_eq!(raw.headers()["content-type"], "text/plain; charset=utf-8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_types_pick_codecs_and_values_are_validated() {
    let n = SingleNode::start().await;
    let cases: [(Option<&str>, &str, &[u8], &str); 7] = [
        (Some("application/json"), "", br#"[1,2]"#, "json"),
        (
            Some("application/json; charset=utf-8"),
            "",
            br#"{"a":true}"#,
            "json",
        ),
        (Some("text/plain"), "", b"plain", "text"),
        (Some("application/toml"), "", b"a = 1\n", "toml"),
        (Some("application/yaml"), "", b"a: [1, 2]\n", "yaml"),
        (Some("application/octet-stream"), "", &[0, 255, 7], "bytes"),
        (None, "", &[1, 2, 3], "bytes"),
    ];
    for (i, (content_type, _, body, codec)) in cases.iter().enumerate() {
        let mut req = n
            .request(Method::PUT, &format!("/v1/namespaces/c/keys/k{i}"))
            .body(body.to_vec());
        if let Some(ct) = content_type {
            req = req.header("content-type", *ct);
        }
        let resp = req.send().await.expect("send");
        assert_eq!(resp.status(), StatusCode::OK, "{content_type:?}");
        let meta: Value = resp.json().await.expect("json");
        assert_eq!(meta["codec"], *codec, "{content_type:?}");
    }
    let overridden = n
        .request(
            Method::PUT,
            "/v1/namespaces/c/keys/proto?codec=client:proto",
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![0xff, 0x00])
        .send()
        .await
        .expect("send");
    let meta: Value = overridden.json().await.expect("json");
    assert_eq!(meta["codec"], "client:proto");

    let before = n.revision("c").await;
    let form = n
        .request(Method::PUT, "/v1/namespaces/c/keys/form")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=b")
        .send()
        .await
        .expect("send");
    assert_error(
        form,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    for (ct, body) in [
        ("application/json", &b"{nope"[..]),
        ("application/toml", b"a = = 1"),
        ("application/yaml", b"a: [1, 2\n"),
        ("text/plain", &[0xff, 0xfe]),
    ] {
        let resp = n
            .request(Method::PUT, "/v1/namespaces/c/keys/bad")
            .header("content-type", ct)
            .body(body.to_vec())
            .send()
            .await
            .expect("send");
        assert_error(resp, StatusCode::BAD_REQUEST, "codec_mismatch").await;
    }
    let xml = n
        .request(Method::PUT, "/v1/namespaces/c/keys/bad?codec=xml")
        .body("<a/>")
        .send();
    assert_error(
        xml.await.expect("send"),
        StatusCode::BAD_REQUEST,
        "unknown_codec",
    )
    .await;
    assert_eq!(
        n.revision("c").await,
        before,
        "rejected writes changed nothing"
    );
    let bad = n
        .get("/v1/namespaces/c/keys/bad")
        .send()
        .await
        .expect("send");
    assert_error(bad, StatusCode::NOT_FOUND, "key_not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_validated() {
    let n = SingleNode::start().await;
    for path in ["/v1/namespaces/Bad/keys/k", "/v1/namespaces/_sys/keys/k"] {
        let resp = n
            .request(Method::PUT, path)
            .body("x")
            .send()
            .await
            .expect("send");
        assert_error(resp, StatusCode::BAD_REQUEST, "invalid_namespace").await;
    }
    for path in [
        "/v1/namespaces/ok/keys/a//b",
        "/v1/namespaces/ok/keys/a%0Ab",
    ] {
        let resp = n
            .request(Method::PUT, path)
            .body("x")
            .send()
            .await
            .expect("send");
        assert_error(resp, StatusCode::BAD_REQUEST, "invalid_key").await;
    }
    let long_key = "k".repeat(513);
    let resp = n
        .request(Method::PUT, &format!("/v1/namespaces/ok/keys/{long_key}"))
        .body("x")
        .send()
        .await
        .expect("send");
    assert_error(resp, StatusCode::BAD_REQUEST, "invalid_key").await;
    let resp = n.get("/v1/namespaces").send().await.expect("send");
    let list: Value = resp.json().await.expect("json");
    assert_eq!(list["items"], json!([]), "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_modes_and_compare_and_set() {
    let n = SingleNode::start().await;
    let put = |key: &str, body: Value| {
        n.request(Method::PUT, &format!("/v1/namespaces/m/keys/{key}"))
            .header("content-type", ENVELOPE)
            .body(body.to_string())
    };
    let created = put(
        "k",
        json!({"value": b64(b"{\"v\":1}"), "codec": "json", "mode": "create"}),
    )
    .send()
    .await
    .expect("send");
    assert_eq!(created.status(), StatusCode::OK);
    assert_eq!(created.headers()["etag"], "\"1\"");
    let again = put(
        "k",
        json!({"value": b64(b"2"), "codec": "json", "mode": "create"}),
    );
    assert_error(
        again.send().await.expect("send"),
        StatusCode::CONFLICT,
        "already_exists",
    )
    .await;
    let update_missing = put("nope", json!({"value": b64(b"x"), "mode": "update"}));
    assert_error(
        update_missing.send().await.expect("send"),
        StatusCode::CONFLICT,
        "does_not_exist",
    )
    .await;
    let cas_wrong = put(
        "k",
        json!({"value": b64(b"3"), "codec": "json", "if_version": 7}),
    );
    assert_error(
        cas_wrong.send().await.expect("send"),
        StatusCode::CONFLICT,
        "version_mismatch",
    )
    .await;
    let cas_ok = put(
        "k",
        json!({"value": b64(b"4"), "codec": "json", "if_version": 1}),
    );
    let meta: Value = cas_ok
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(meta["version"], 2);
    let absent = put("fresh", json!({"value": b64(b"x"), "if_version": 0}));
    let meta: Value = absent
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        meta["codec"], "bytes",
        "the envelope codec defaults to bytes"
    );

    // Headers and query parameters.
    let raw = |key: &str| {
        n.request(Method::PUT, &format!("/v1/namespaces/m/keys/{key}"))
            .header("content-type", "text/plain")
            .body("v")
    };
    let stale = raw("k")
        .header("if-match", "\"1\"")
        .send()
        .await
        .expect("send");
    assert_error(stale, StatusCode::CONFLICT, "version_mismatch").await;
    let fresh = raw("k")
        .header("if-match", "\"2\"")
        .send()
        .await
        .expect("send");
    assert_eq!(fresh.status(), StatusCode::OK);
    let create_only = raw("k")
        .header("if-none-match", "*")
        .send()
        .await
        .expect("send");
    assert_error(create_only, StatusCode::CONFLICT, "already_exists").await;
    let update_only = raw("ghost")
        .header("if-match", "*")
        .send()
        .await
        .expect("send");
    assert_error(update_only, StatusCode::CONFLICT, "does_not_exist").await;
    let q = n
        .request(Method::PUT, "/v1/namespaces/m/keys/k?mode=create")
        .body("v")
        .send()
        .await
        .expect("send");
    assert_error(q, StatusCode::CONFLICT, "already_exists").await;

    let before = n.revision("m").await;
    for (headers, body) in [
        (vec![], json!({"value": "***not base64***"})),
        (vec![], json!({"value": b64(b"x"), "colour": "red"})),
        (vec![], json!({"value": b64(b"x"), "mode": "sideways"})),
        (
            vec![("if-match", "\"3\"")],
            json!({"value": b64(b"x"), "if_version": 2}),
        ),
        (vec![("if-match", "three")], json!({"value": b64(b"x")})),
        (
            vec![("if-none-match", "\"3\"")],
            json!({"value": b64(b"x")}),
        ),
    ] {
        let mut req = put("k", body.clone());
        for (name, value) in headers.iter().copied() {
            req = req.header(name, value);
        }
        let resp = req.send().await.expect("send");
        assert_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let not_json = n
        .request(Method::PUT, "/v1/namespaces/m/keys/k")
        .header("content-type", ENVELOPE)
        .body("{{{")
        .send()
        .await
        .expect("send");
    assert_error(not_json, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(
        n.revision("m").await,
        before,
        "rejected writes changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_the_limit_are_refused() {
    let n = SingleNode::start_with(|c| c.max_value_bytes = 1024).await;
    let ok = n
        .request(Method::PUT, "/v1/namespaces/s/keys/k")
        .body(vec![b'a'; 1024])
        .send();
    assert_eq!(ok.await.expect("send").status(), StatusCode::OK);
    let over = n
        .request(Method::PUT, "/v1/namespaces/s/keys/k")
        .body(vec![b'a'; 1025])
        .send();
    assert_error(
        over.await.expect("send"),
        StatusCode::PAYLOAD_TOO_LARGE,
        "value_too_large",
    )
    .await;
    let huge = n
        .request(Method::PUT, "/v1/namespaces/s/keys/k")
        .body(vec![b'a'; 4 << 20])
        .send();
    match huge.await {
        Ok(resp) => {
            assert_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "value_too_large").await;
        }
        // The server may answer and close before the client finished sending 4 MiB.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    let envelope = n
        .request(Method::PUT, "/v1/namespaces/s/keys/k")
        .header("content-type", ENVELOPE)
        .body(json!({"value": b64(&[1u8; 1025])}).to_string())
        .send()
        .await
        .expect("send");
    assert_error(envelope, StatusCode::PAYLOAD_TOO_LARGE, "value_too_large").await;
    let entry = n.json("/v1/namespaces/s/keys/k").await;
    assert_eq!(entry["version"], 1, "refused writes changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_conditions_and_history_tombstones() {
    let n = SingleNode::start().await;
    n.put_json("d", "k", json!(1)).await;
    let wrong = n
        .request(Method::DELETE, "/v1/namespaces/d/keys/k")
        .header("if-match", "\"5\"")
        .send()
        .await
        .expect("send");
    assert_error(wrong, StatusCode::CONFLICT, "version_mismatch").await;
    assert_eq!(n.json("/v1/namespaces/d/keys/k").await["version"], 1);
    let deleted: Value = n
        .request(Method::DELETE, "/v1/namespaces/d/keys/k")
        .header("if-match", "\"1\"")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        deleted,
        json!({"namespace": "d", "key": "k", "version": 2, "revision": 2, "deleted": true})
    );
    let gone = n.get("/v1/namespaces/d/keys/k").send().await.expect("send");
    assert_error(gone, StatusCode::NOT_FOUND, "key_not_found").await;
    let again = n
        .request(Method::DELETE, "/v1/namespaces/d/keys/k")
        .send()
        .await
        .expect("send");
    assert_error(again, StatusCode::NOT_FOUND, "key_not_found").await;

    let history = n.json("/v1/namespaces/d/versions/k").await;
    assert_eq!(history["items"][0]["version"], 2);
    assert_eq!(history["items"][0]["deleted"], true);
    assert_eq!(history["items"][0]["value"], Value::Null);
    assert_eq!(history["items"][1]["version"], 1);
    // Re-creating continues the numbering.
    assert_eq!(n.put_json("d", "k", json!(2)).await["version"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_keys_pages_through_everything_once() {
    let n = SingleNode::start().await;
    for i in 0..25 {
        n.put_json("l", &format!("app/k{i:02}"), json!(i)).await;
    }
    n.put_json("l", "other/x", json!(0)).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/namespaces/l/keys?prefix=app/&limit=10".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = n.json(&path).await;
        assert_eq!(page["namespace"], "l");
        assert_eq!(page["revision"], 26);
        for item in page["items"].as_array().expect("items") {
            seen.push(item["key"].as_str().expect("key").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("app/k{i:02}")).collect();
    assert_eq!(seen, expected);
    for bad in ["limit=0", "limit=1001", "limit=ten", "cursor=***"] {
        let resp = n
            .get(&format!("/v1/namespaces/l/keys?{bad}"))
            .send()
            .await
            .expect("send");
        assert_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let unknown = n
        .get("/v1/namespaces/nowhere/keys")
        .send()
        .await
        .expect("send");
    assert_error(unknown, StatusCode::NOT_FOUND, "namespace_not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_page_and_trim() {
    let n = SingleNode::start_with(|c| c.history_per_key = 3).await;
    for i in 1..=5 {
        n.put_json("h", "k", json!({"i": i})).await;
    }
    let page = n.json("/v1/namespaces/h/versions/k?limit=2").await;
    let versions: Vec<u64> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| v["version"].as_u64().expect("v"))
        .collect();
    assert_eq!(versions, vec![5, 4]);
    let cursor = page["next_cursor"].as_str().expect("more");
    let rest = n
        .json(&format!(
            "/v1/namespaces/h/versions/k?limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(rest["items"][0]["version"], 3);
    assert_eq!(
        rest["next_cursor"],
        Value::Null,
        "only 3 versions are retained"
    );
    let one = n.json("/v1/namespaces/h/versions/k?version=4").await;
    assert_eq!(one["value"], b64(br#"{"i":4}"#));
    assert_eq!(one["codec"], "json");
    assert_eq!(one["deleted"], false);
    let trimmed = n
        .get("/v1/namespaces/h/versions/k?version=1")
        .send()
        .await
        .expect("send");
    assert_error(trimmed, StatusCode::NOT_FOUND, "version_not_found").await;
    let unknown = n
        .get("/v1/namespaces/h/versions/none")
        .send()
        .await
        .expect("send");
    assert_error(unknown, StatusCode::NOT_FOUND, "key_not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_reports_structural_changes() {
    let n = SingleNode::start().await;
    n.put_json(
        "df",
        "k",
        json!({"db": {"host": "a", "port": 1}, "old": true}),
    )
    .await;
    n.put_json(
        "df",
        "k",
        json!({"db": {"host": "a", "port": 2, "tls": true}}),
    )
    .await;
    let diff = n.json("/v1/namespaces/df/diff/k").await;
    assert_eq!(diff["v1"]["version"], 1);
    assert_eq!(diff["v2"]["version"], 2);
    assert_eq!(diff["changed"], true);
    assert_eq!(
        diff["structural"]["changed"],
        json!([{"path": "/db/port", "from": 1, "to": 2}])
    );
    assert_eq!(
        diff["structural"]["added"],
        json!([{"path": "/db/tls", "value": true}])
    );
    assert_eq!(
        diff["structural"]["removed"],
        json!([{"path": "/old", "value": true}])
    );
    let same = n.json("/v1/namespaces/df/diff/k?v1=2&v2=2").await;
    assert_eq!(same["changed"], false);

    let text = n
        .request(Method::PUT, "/v1/namespaces/df/keys/t")
        .header("content-type", "text/plain")
        .body("a")
        .send();
    assert_eq!(text.await.expect("send").status(), StatusCode::OK);
    n.request(Method::PUT, "/v1/namespaces/df/keys/t")
        .header("content-type", "text/plain")
        .body("b")
        .send()
        .await
        .expect("send");
    let text_diff = n.json("/v1/namespaces/df/diff/t?v1=1&v2=2").await;
    assert_eq!(text_diff["changed"], true);
    assert_eq!(text_diff["structural"], Value::Null);
    let missing = n
        .get("/v1/namespaces/df/diff/k?v1=1&v2=9")
        .send()
        .await
        .expect("send");
    assert_error(missing, StatusCode::NOT_FOUND, "version_not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_etag_and_not_modified() {
    let n = SingleNode::start().await;
    n.put_json("s", "a", json!(1)).await;
    n.put_json("s", "b", json!(2)).await;
    let resp = n
        .get("/v1/namespaces/s/snapshot")
        .send()
        .await
        .expect("send");
    let etag = resp.headers()["etag"].to_str().expect("ascii").to_string();
    let snap: Value = resp.json().await.expect("json");
    assert_eq!(snap["etag"], etag.as_str());
    assert_eq!(snap["revision"], 2);
    assert_eq!(snap["entries"].as_array().map(Vec::len), Some(2));

    let cached = n
        .get("/v1/namespaces/s/snapshot")
        .header("if-none-match", &etag)
        .send();
    let cached = cached.await.expect("send");
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(cached.headers()["etag"], etag.as_str());
    assert!(cached.bytes().await.expect("body").is_empty());

    // A rejected write leaves the ETag alone; a real one changes it.
    let rejected = n
        .request(Method::PUT, "/v1/namespaces/s/keys/a")
        .header("if-none-match", "*")
        .body("x")
        .send();
    assert_eq!(rejected.await.expect("send").status(), StatusCode::CONFLICT);
    let still = n
        .get("/v1/namespaces/s/snapshot")
        .header("if-none-match", &etag)
        .send();
    assert_eq!(
        still.await.expect("send").status(),
        StatusCode::NOT_MODIFIED
    );
    n.put_json("s", "c", json!(3)).await;
    let changed = n
        .get("/v1/namespaces/s/snapshot")
        .header("if-none-match", &etag)
        .send();
    let changed = changed.await.expect("send");
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()["etag"], etag.as_str());

    let unknown = n
        .get("/v1/namespaces/none/snapshot")
        .send()
        .await
        .expect("send");
    assert_error(unknown, StatusCode::NOT_FOUND, "namespace_not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_listing_and_access() {
    let n = SingleNode::start().await;
    for ns in ["ns-a", "ns-b", "ns-c", "other"] {
        n.put_json(ns, "k", json!(1)).await;
    }
    n.request(Method::DELETE, "/v1/namespaces/ns-b/keys/k")
        .send()
        .await
        .expect("send");
    let first = n.json("/v1/namespaces?prefix=ns-&limit=1").await;
    assert_eq!(first["items"][0]["name"], "ns-a");
    assert_eq!(first["items"][0]["key_count"], 1);
    assert!(first["items"][0]["etag"].as_str().is_some());
    let cursor = first["next_cursor"].as_str().expect("more");
    let second = n
        .json(&format!(
            "/v1/namespaces?prefix=ns-&limit=1&cursor={cursor}"
        ))
        .await;
    assert_eq!(
        second["items"][0]["name"], "ns-c",
        "emptied ns-b is not listed"
    );
    assert_eq!(second["next_cursor"], Value::Null);

    let access = n.json("/v1/namespaces/anything/access").await;
    assert_eq!(
        access,
        json!({"namespace": "anything", "principal": "admin", "read": true, "write": true})
    );
    let bad = n
        .get("/v1/namespaces/Bad!/access")
        .send()
        .await
        .expect("send");
    assert_error(bad, StatusCode::BAD_REQUEST, "invalid_namespace").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases() {
    let n = SingleNode::start().await;
    n.put_json("al", "db/v1", json!({"v": 1})).await;
    n.put_json("al", "db/v2", json!({"v": 2})).await;
    let put_alias = |alias: &str, body: &str| {
        n.request(Method::PUT, &format!("/v1/namespaces/al/aliases/{alias}"))
            .body(body.to_string())
    };
    let created = put_alias("db/current", r#"{"target":"db/v2"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(created.status(), StatusCode::CREATED);
    let alias: Value = created.json().await.expect("json");
    assert_eq!(alias["target"], "db/v2");
    let rev = n.revision("al").await;
    let retry = put_alias("db/current", r#"{"target":"db/v2"}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(
        n.revision("al").await,
        rev,
        "identical retry takes no revision"
    );

    let via = n.json("/v1/namespaces/al/keys/db/current").await;
    assert_eq!(via["key"], "db/v2");
    assert_eq!(via["alias"], "db/current");

    let elsewhere = put_alias("db/current", r#"{"target":"db/v1"}"#)
        .send()
        .await
        .expect("send");
    assert_error(elsewhere, StatusCode::CONFLICT, "name_taken").await;
    let shadow = put_alias("db/v1", r#"{"target":"db/v2"}"#)
        .send()
        .await
        .expect("send");
    assert_error(shadow, StatusCode::CONFLICT, "name_taken").await;
    let missing = put_alias("x", r#"{"target":"db/none"}"#)
        .send()
        .await
        .expect("send");
    assert_error(missing, StatusCode::NOT_FOUND, "key_not_found").await;
    let chain = put_alias("y", r#"{"target":"db/current"}"#)
        .send()
        .await
        .expect("send");
    assert_error(chain, StatusCode::BAD_REQUEST, "invalid_request").await;
    let malformed = put_alias("z", r#"{"goal":"db/v1"}"#)
        .send()
        .await
        .expect("send");
    assert_error(malformed, StatusCode::BAD_REQUEST, "invalid_request").await;
    let write_through = n
        .request(Method::PUT, "/v1/namespaces/al/keys/db/current")
        .body("x")
        .send()
        .await
        .expect("send");
    assert_error(write_through, StatusCode::CONFLICT, "name_taken").await;
    let delete_through = n
        .request(Method::DELETE, "/v1/namespaces/al/keys/db/current")
        .send()
        .await
        .expect("send");
    assert_error(delete_through, StatusCode::CONFLICT, "name_taken").await;
    assert_eq!(
        n.revision("al").await,
        rev,
        "rejected alias operations changed nothing"
    );

    put_alias("db/old", r#"{"target":"db/v1"}"#)
        .send()
        .await
        .expect("send");
    let one = n.json("/v1/namespaces/al/aliases/db/old").await;
    assert_eq!(one["target"], "db/v1");
    let page = n.json("/v1/namespaces/al/aliases?limit=1").await;
    assert_eq!(page["items"][0]["alias"], "db/current");
    let cursor = page["next_cursor"].as_str().expect("more");
    let page2 = n
        .json(&format!(
            "/v1/namespaces/al/aliases?limit=1&cursor={cursor}"
        ))
        .await;
    assert_eq!(page2["items"][0]["alias"], "db/old");

    // A dangling alias answers 404 naming its target.
    n.request(Method::DELETE, "/v1/namespaces/al/keys/db/v1")
        .send()
        .await
        .expect("send");
    let dangling = n
        .get("/v1/namespaces/al/keys/db/old")
        .send()
        .await
        .expect("send");
    let body = assert_error(dangling, StatusCode::NOT_FOUND, "key_not_found").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("db/v1")),
        "{body}"
    );

    let removed = n
        .request(Method::DELETE, "/v1/namespaces/al/aliases/db/old")
        .send();
    assert_eq!(removed.await.expect("send").status(), StatusCode::OK);
    let gone = n
        .get("/v1/namespaces/al/aliases/db/old")
        .send()
        .await
        .expect("send");
    assert_error(gone, StatusCode::NOT_FOUND, "alias_not_found").await;
    let gone_again = n
        .request(Method::DELETE, "/v1/namespaces/al/aliases/db/old")
        .send();
    assert_error(
        gone_again.await.expect("send"),
        StatusCode::NOT_FOUND,
        "alias_not_found",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codecs_unknown_routes_and_methods() {
    let n = SingleNode::start().await;
    let codecs = n.json("/v1/codecs").await;
    let names: Vec<&str> = codecs["codecs"]
        .as_array()
        .expect("codecs")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["json", "yaml", "toml", "text", "bytes"]);
    let nowhere = n.get("/v1/nowhere").send().await.expect("send");
    assert_error(nowhere, StatusCode::NOT_FOUND, "route_not_found").await;
    let patch = n
        .request(Method::PATCH, "/v1/namespaces/a/keys/k")
        .send()
        .await
        .expect("send");
    assert_error(patch, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart() {
    let mut n = SingleNode::start().await;
    n.put_json("r", "a", json!({"x": 1})).await;
    n.put_json("r", "a", json!({"x": 2})).await;
    n.request(Method::PUT, "/v1/namespaces/r/aliases/b")
        .body(r#"{"target":"a"}"#)
        .send()
        .await
        .expect("send");
    let before = n.json("/v1/namespaces/r/snapshot").await;
    n.restart().await;
    let after = n.json("/v1/namespaces/r/snapshot").await;
    assert_eq!(
        before, after,
        "same entries, aliases, revision and ETag after restart"
    );
    assert_eq!(
        n.json("/v1/namespaces/r/versions/a").await["items"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(n.put_json("r", "a", json!(3)).await["revision"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bodies_never_cause_a_server_error() {
    let n = SingleNode::start().await;
    let content_types = [
        "application/json",
        ENVELOPE,
        "application/yaml",
        "application/toml",
        "text/plain",
        "application/octet-stream",
        "image/png",
        "",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..200 {
        let len = (next() % 300) as usize;
        let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let ct = content_types[(next() % content_types.len() as u64) as usize];
        let mut req = n
            .request(Method::PUT, &format!("/v1/namespaces/g/keys/k{}", i % 7))
            .body(body);
        if !ct.is_empty() {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.expect("send");
        assert!(
            !resp.status().is_server_error(),
            "{} for {ct}",
            resp.status()
        );
    }
}

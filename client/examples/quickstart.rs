//! A runnable tour of the client library against a local node.
//!
//! ```sh
//! cargo run --release -- start                      # in one shell: a node in ./cfgnode-data
//! cargo run -p cfgnode-client --example quickstart  # in another, from the same directory
//! ```
//!
//! It trusts the node by pinning the node's own certificate from `./cfgnode-data/tls/node.pem`
//! and authenticates with `./cfgnode-data/admin.token` (override with `CFGNODE_DATA_DIR` and
//! `CFGNODE_ADDR`).

use std::path::PathBuf;
use std::time::Duration;

use cfgnode_client::{Client, ClientError, ConnectionEvent, PutOptions, SnapshotResult, WriteMode};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir =
        PathBuf::from(std::env::var("CFGNODE_DATA_DIR").unwrap_or_else(|_| "cfgnode-data".into()));
    let addr = std::env::var("CFGNODE_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:7000".into())
        .parse()?;
    let token = std::fs::read_to_string(data_dir.join("admin.token"))?
        .trim()
        .to_string();

    let client = Client::builder([addr])
        .token(token)
        .ca(&data_dir.join("tls").join("node.pem"), None)?
        .timeout(Duration::from_secs(5))
        .on_connection_change(|event| match event {
            ConnectionEvent::Connected { addr } => println!("connected to {addr}"),
            ConnectionEvent::Disconnected { addr, reason } => println!("lost {addr}: {reason}"),
        })
        .build()?;

    // Write a JSON document, then change it only if nobody else did in between.
    let json = |mode, if_version| PutOptions {
        codec: Some("json".into()),
        mode,
        if_version,
    };
    let first = client
        .put(
            "example",
            "service/limits",
            br#"{"rps":100}"#.to_vec(),
            json(WriteMode::Upsert, None),
        )
        .await?;
    println!(
        "wrote version {} at revision {}",
        first.version, first.revision
    );
    let second = client
        .put(
            "example",
            "service/limits",
            br#"{"rps":250}"#.to_vec(),
            json(WriteMode::Upsert, Some(first.version)),
        )
        .await?;
    match client
        .put(
            "example",
            "service/limits",
            b"{}".to_vec(),
            json(WriteMode::Upsert, Some(first.version)),
        )
        .await
    {
        Err(ClientError::Conflict { code, .. }) => {
            println!("stale compare-and-set refused: {code}")
        }
        other => println!("unexpected: {other:?}"),
    }

    // Read, diff, and poll a snapshot by ETag.
    let entry = client.get("example", "service/limits").await?;
    println!(
        "current: {} (version {})",
        String::from_utf8_lossy(&entry.value),
        entry.version
    );
    let diff = client
        .diff(
            "example",
            "service/limits",
            Some(first.version),
            Some(second.version),
        )
        .await?;
    println!("diff: {}", diff.structural_json.unwrap_or_default());
    let SnapshotResult::Modified(snapshot) = client.snapshot("example", None).await? else {
        return Err("a snapshot without an ETag is always returned".into());
    };
    println!(
        "snapshot: {} entries at revision {}",
        snapshot.entries.len(),
        snapshot.revision
    );
    if let SnapshotResult::NotModified { etag } =
        client.snapshot("example", Some(&snapshot.etag)).await?
    {
        println!("unchanged since {etag}");
    }
    client.close().await;
    Ok(())
}

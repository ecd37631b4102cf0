//! A client that hangs up in the middle of a write must not let go of the namespace before the
//! write is done: a handoff freezes a namespace only when no request holds its gate, and copies
//! it then; a write still queued in the storage writer at that moment would commit on the old
//! holder after the copy, and be lost.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use cfgnode_storage::{CommitObserver, CommitStats};
use cfgnode_tests::SingleNode;
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

const PROMPTLY: Duration = Duration::from_secs(5);

/// Holds the storage writer thread still, once armed, right after its next commit: writes
/// queued behind it wait, uncommitted, until [`WriterLatch::release`].
#[derive(Debug, Default)]
struct WriterLatch {
    phase: Mutex<Phase>,
    changed: Condvar,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Open,
    Armed,
    Holding,
    Released,
}

impl WriterLatch {
    fn set(&self, phase: Phase) {
        *self.phase.lock().expect("latch") = phase;
        self.changed.notify_all();
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().expect("latch")
    }

    fn release(&self) {
        self.set(Phase::Released);
    }
}

impl CommitObserver for WriterLatch {
    fn on_commit(&self, _: &CommitStats) {
        let mut phase = self.phase.lock().expect("latch");
        if *phase == Phase::Armed {
            *phase = Phase::Holding;
            self.changed.notify_all();
            while *phase == Phase::Holding {
                phase = self.changed.wait(phase).expect("latch");
            }
        }
    }
}

/// Releases the writer however the test ends, so a failing assertion cannot leave the writer
/// thread (and the test process) stuck.
struct ReleaseOnDrop(Arc<WriterLatch>);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

async fn eventually(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn open_connections(page: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with("cfgnode_http_connections_open{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_client_hung_up_keeps_the_namespace_until_it_commits() {
    let latch = Arc::new(WriterLatch::default());
    let _release = ReleaseOnDrop(Arc::clone(&latch));
    // No pooling: every connection the test opens is closed after its request, so the open
    // connections gauge counts only what is in flight.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let n = SingleNode::start_with_commit_hook(Arc::clone(&latch) as Arc<dyn CommitObserver>)
        .await
        .with_http(http.clone());
    let (node, token, base) = (n.node(), n.token.clone(), n.base.clone());
    let put = |ns: &str, key: &str, value: &'static str| {
        http.put(format!("{base}/v1/namespaces/{ns}/keys/{key}"))
            .bearer_auth(&token)
            .header("content-type", "text/plain")
            .body(value)
    };
    // Both namespaces exist before the writer is held (creating one commits a record).
    for ns in ["app", "other"] {
        let resp = put(ns, "seed", "1").send().await.expect("send");
        assert_eq!(resp.status(), StatusCode::OK);
    }

    // Hold the writer: the next commit (this write to another namespace, or a background one)
    // stops it, and writes queued after it wait uncommitted.
    latch.set(Phase::Armed);
    let blocker = tokio::spawn(put("other", "blocker", "1").send());
    eventually(PROMPTLY, "the writer is held", async || {
        latch.phase() == Phase::Holding
    })
    .await;

    // The write under test, from a client that hangs up as soon as it is sent.
    let mut client = TcpStream::connect(node.http_addr()).await.expect("connect");
    let request = format!(
        "PUT /v1/namespaces/app/keys/k HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\nwritten"
    );
    client.write_all(request.as_bytes()).await.expect("send");
    eventually(PROMPTLY, "the write holds the namespace", async || {
        !node.could_freeze("app")
    })
    .await;
    drop(client);
    // Wait until the node has closed that connection (and so dropped the request's future):
    // open now are only the blocker's connection and this scrape's.
    let scrape = async || {
        let page = http
            .get(format!("{base}/metrics"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics");
        open_connections(&page)
    };
    eventually(PROMPTLY, "the node dropped the connection", async || {
        scrape().await.is_some_and(|open| open <= 2.0)
    })
    .await;

    // The request's future is gone, but its write still waits in the writer: the namespace
    // must still be held, so no handoff can freeze and copy it without that write. Without
    // `Permit::run_to_completion` the permit lived in that future and went with it, and a
    // freeze could be taken here (this assertion failed).
    assert!(
        !node.could_freeze("app"),
        "the namespace was released while a write to it was still queued"
    );
    let not_yet = http
        .get(format!("{base}/v1/namespaces/app/keys/k"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(
        not_yet.status(),
        StatusCode::NOT_FOUND,
        "the write is still queued"
    );

    latch.release();
    eventually(PROMPTLY, "the write lets go of the namespace", async || {
        node.could_freeze("app")
    })
    .await;
    // Released only once committed: a handoff freezing now copies the write.
    let written = http
        .get(format!("{base}/v1/namespaces/app/keys/k?raw=true"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    assert_eq!(written.status(), StatusCode::OK);
    assert_eq!(written.text().await.expect("body"), "written");
    let blocker = blocker.await.expect("blocker task").expect("blocker write");
    assert_eq!(blocker.status(), StatusCode::OK);
    n.shutdown().await;
}

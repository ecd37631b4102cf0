//! [`Node`]: opens storage, loads the admin token, binds the HTTP port, serves until shut down.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cfgnode_storage::{Store, StoreOptions, validate_node_id};
use cfgnode_transport::{
    ClientTls, Identity, MAX_FRAME_BYTES, PeerClaim, PeerCredentials, ServerTls,
    bind_node_endpoint, load_roots,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::auth::{TokenVerifier, load_admin_token};
use crate::cluster::{self, Cluster, ClusterParts, GossipHandler, MapState, Peers, load_map};
use crate::cluster_key::load_cluster_key;
use crate::error::NodeError;
use crate::feeds::Feeds;
use crate::http::{self as http_api, HttpLimits, body_limit, router};
use crate::membership::{
    DatagramLinks, Membership, MembershipConfig, Peer, persist_members, restore_members,
};
use crate::metrics::{CommitMetrics, Metrics};
use crate::quic_server::{self, QuicContext};
use crate::records::NamespaceRecords;
use crate::replication::Replicator;
use crate::roles::Roles;
use crate::roles::config::ConfigService;
use crate::roles::proxy::ProxyService;
use crate::roles::proxy::follow::ProxyState;
use crate::roles::proxy::server::Proxy;
use crate::roles::push::webhook_targets::{Cidr, TargetPolicy};
use crate::roles::push::webhooks::Sender;
use crate::roles::push::{Agents, Hub, PushRole};
use crate::roles::registry::RegistryService;

/// Largest `--max-value-bytes`: a value and its envelope must fit one QUIC frame.
pub const MAX_VALUE_LIMIT: usize = MAX_FRAME_BYTES / 2;

/// How long shutdown waits for the last tasks to let go of storage.
const STORE_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// File name of the redb database inside the data dir.
pub const DATABASE_FILE: &str = "cfgnode.redb";

/// Everything a node needs to start. Built by `cfgnode start` from flags and environment.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Where the database and the admin token live.
    pub data_dir: PathBuf,
    /// The node id to use; `None` keeps the stored one or makes one on first start.
    pub node_id: Option<String>,
    /// The HTTP admin address; port 0 picks a free port (tests).
    pub http_addr: SocketAddr,
    /// The QUIC address for clients and peers; port 0 picks a free port (tests).
    pub quic_addr: SocketAddr,
    /// The QUIC address peers and clients reach this node at (`--advertise`); `None`: the
    /// bound address, which must then be a specific one (not 0.0.0.0).
    pub advertise_quic: Option<SocketAddr>,
    /// The HTTP address shown in the member list (`--advertise-http`); `None`: the bound one.
    pub advertise_http: Option<SocketAddr>,
    /// The cluster this node belongs to; QUIC requests naming another are refused.
    pub cluster_id: String,
    /// Mutual TLS material; `None` runs with a self-signed certificate.
    pub tls: Option<TlsFiles>,
    /// QUIC addresses of nodes to join through (`--join`); announced to until they answer.
    pub join: Vec<SocketAddr>,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Versions kept per key.
    pub history_per_key: u64,
    /// Events kept per namespace log.
    pub log_per_namespace: u64,
    /// Use the token in this file instead of `<data_dir>/admin.token`.
    pub token_file: Option<PathBuf>,
    /// The cluster key every node of the cluster holds (`--cluster-key-file`); `None` uses
    /// `<data_dir>/cluster.key`, created by the first node of a new cluster.
    pub cluster_key_file: Option<PathBuf>,
    /// Most HTTP connections open at once (`--http-max-connections`); more are closed at once.
    pub http_max_connections: usize,
    /// How long an HTTP client may take to send a request's headers, and an idle keep-alive
    /// connection may wait for its next request (`--http-header-timeout`).
    pub http_header_timeout: std::time::Duration,
    /// How long an HTTP request body may take to arrive in full (`--http-body-timeout`).
    pub http_body_timeout: std::time::Duration,
    /// Non-public networks webhooks may still be delivered to (`--webhook-allow`); public
    /// addresses are always allowed, loopback, private, link-local and the like only when
    /// listed here (docs/push.md, "Webhook targets").
    pub webhook_allow: Vec<Cidr>,
    /// How often each registry subscription gets a full-state `reconcile` notification
    /// (`--registry-reconcile`), so a subscriber that missed or mishandled one recovers.
    pub registry_reconcile: std::time::Duration,
    /// Where the reverse proxy listens (`--proxy`); `None`: no proxy on this node.
    pub proxy: Option<SocketAddr>,
    /// The namespaces whose routes the proxy serves (`--proxy-namespaces`).
    pub proxy_namespaces: Vec<String>,
    /// The certificate chain and key (PEM) the proxy terminates TLS with
    /// (`--proxy-tls-cert`, `--proxy-tls-key`); `None`: plain HTTP.
    pub proxy_tls: Option<(PathBuf, PathBuf)>,
    /// How many threads serve the proxy (`--proxy-threads`); `None`: one per core. Each has its
    /// own runtime and backend connections (docs/proxy.md, "Threads").
    pub proxy_threads: Option<usize>,
    /// The size of each namespace's replica set, the holder included (`--replicas`, 1 to 64,
    /// default 3; 1: no replication). A write is answered once a majority of the set has it;
    /// a set smaller than asked (a smaller cluster) is never even, so two nodes under the
    /// default keep one copy each (`cfgnode_ring::set_size`, docs/replication.md).
    pub replicas: usize,
}

impl NodeConfig {
    /// The defaults of `cfgnode start`, with the given data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let defaults = StoreOptions::default();
        NodeConfig {
            data_dir: data_dir.into(),
            node_id: None,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            quic_addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            advertise_quic: None,
            advertise_http: None,
            cluster_id: DEFAULT_CLUSTER_ID.to_string(),
            tls: None,
            join: Vec::new(),
            max_value_bytes: defaults.max_value_bytes,
            history_per_key: defaults.history_per_key,
            log_per_namespace: defaults.log_per_namespace,
            token_file: None,
            cluster_key_file: None,
            http_max_connections: http_api::DEFAULT_MAX_CONNECTIONS,
            http_header_timeout: http_api::DEFAULT_HEADER_TIMEOUT,
            http_body_timeout: http_api::DEFAULT_BODY_TIMEOUT,
            webhook_allow: Vec::new(),
            registry_reconcile: crate::roles::registry::subscriptions::DEFAULT_RECONCILE,
            proxy: None,
            proxy_namespaces: Vec::new(),
            proxy_tls: None,
            proxy_threads: None,
            replicas: 3,
        }
    }
}

/// The cluster id nodes and clients use unless told otherwise.
pub const DEFAULT_CLUSTER_ID: &str = "cfgnode";

/// The files that turn on mutual TLS (`cfgnode start --tls-ca --tls-cert --tls-key`).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// This node's certificate (chain) from that CA.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// A running node. Dropping it without [`Node::shutdown`] stops serving abruptly.
#[derive(Debug)]
pub struct Node {
    node_id: String,
    http_addr: SocketAddr,
    proxy_addr: Option<SocketAddr>,
    quic_addr: SocketAddr,
    data_dir: PathBuf,
    token_path: PathBuf,
    stop: watch::Sender<bool>,
    leave: watch::Sender<bool>,
    http_server: JoinHandle<std::io::Result<()>>,
    quic_server: JoinHandle<()>,
    membership: Membership,
    membership_task: JoinHandle<()>,
    persister: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    store: Store,
    cluster: Cluster,
    replicator: Replicator,
}

impl Node {
    /// Opens storage, loads (or creates) the admin token, binds the HTTP port and starts serving.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        Self::start_observed(config, None).await
    }

    /// [`Node::start`], with `hook` told of every storage commit on the writer thread (after
    /// the commit, before the writes are answered). Tests use it to hold the writer still.
    #[doc(hidden)]
    pub async fn start_with_commit_hook(
        config: NodeConfig,
        hook: Arc<dyn cfgnode_storage::CommitObserver>,
    ) -> Result<Node, NodeError> {
        Self::start_observed(config, Some(hook)).await
    }

    async fn start_observed(
        config: NodeConfig,
        hook: Option<Arc<dyn cfgnode_storage::CommitObserver>>,
    ) -> Result<Node, NodeError> {
        if let Some(id) = &config.node_id {
            validate_node_id(id)?;
        }
        if config.max_value_bytes == 0 {
            return Err(NodeError::Config(
                "--max-value-bytes must be at least 1".to_string(),
            ));
        }
        check_http_limits(&config)?;
        if !(1..=cfgnode_storage::MAX_REPLICAS).contains(&config.replicas) {
            return Err(NodeError::Config(format!(
                "--replicas must be between 1 and {}",
                cfgnode_storage::MAX_REPLICAS
            )));
        }
        if config.advertise_quic.is_none() && config.quic_addr.ip().is_unspecified() {
            return Err(NodeError::Config(format!(
                "--listen {} accepts on every interface, but peers and clients need one address to reach this node at: add --advertise HOST:PORT",
                config.quic_addr
            )));
        }
        if let Some(addr) = config.advertise_quic
            && (addr.ip().is_unspecified() || addr.port() == 0)
        {
            return Err(NodeError::Config(format!(
                "--advertise {addr} must be an address peers can reach: a specific IP and port"
            )));
        }
        create_private_dir(&config.data_dir)?;
        let (token, token_source) =
            load_admin_token(&config.data_dir, config.token_file.as_deref())?;
        let (cluster_key, key_source) = load_cluster_key(
            &config.data_dir,
            config.cluster_key_file.as_deref(),
            !config.join.is_empty(),
        )?;

        // The metrics registry is labelled with the node id, which storage settles; the observer
        // reaches the registry through a slot filled right after opening.
        let metrics_slot: Arc<std::sync::OnceLock<Arc<Metrics>>> = Arc::default();
        let observer = Arc::new(LateCommitMetrics(Arc::clone(&metrics_slot), hook));
        let options = StoreOptions {
            max_value_bytes: config.max_value_bytes,
            history_per_key: config.history_per_key,
            log_per_namespace: config.log_per_namespace,
            observer: Some(observer),
            ..StoreOptions::default()
        };
        let db_path = config.data_dir.join(DATABASE_FILE);
        let store = {
            let node_id = config.node_id.clone();
            tokio::task::spawn_blocking(move || Store::open(&db_path, node_id.as_deref(), options))
                .await
                .map_err(|e| NodeError::Config(format!("storage open task failed: {e}")))??
        };
        let node_id = store.node_id().to_string();
        let metrics = Metrics::new(&node_id);
        let _ = metrics_slot.set(Arc::clone(&metrics));

        let (server_tls, client_tls) = tls_modes(&config)?;
        // The same reset key at every start, so a restarted node resets its previous life's
        // connections at once (docs/security.md).
        let reset_key = cluster_key.derive(format!("quic stateless reset {node_id}").as_bytes());
        let endpoint = bind_node_endpoint(config.quic_addr, &server_tls, &client_tls, reset_key)
            .map_err(|e| NodeError::Config(format!("{e} (--listen)")))?;
        let quic_addr = endpoint.local_addr().map_err(NodeError::Http)?;

        let listener = TcpListener::bind(config.http_addr)
            .await
            .map_err(|source| NodeError::Bind {
                addr: config.http_addr.to_string(),
                flag: "--http",
                source,
            })?;
        let http_addr = listener.local_addr().map_err(NodeError::Http)?;
        let proxy_listener = match config.proxy {
            None => None,
            Some(addr) => Some(bind_proxy(addr, &config.proxy_namespaces).await?),
        };
        let proxy_tls = match (&config.proxy_tls, config.proxy) {
            (Some((cert, key)), Some(_)) => Some(crate::roles::proxy::tls::acceptor(cert, key)?),
            (Some(_), None) => {
                return Err(NodeError::Config(
                    "--proxy-tls-cert/--proxy-tls-key need --proxy".to_string(),
                ));
            }
            (None, _) => None,
        };
        let proxy_addr = match &proxy_listener {
            Some(listener) => Some(listener.local_addr().map_err(NodeError::Http)?),
            None => None,
        };

        let (stop, stopped) = watch::channel(false);
        // Membership stops first (it announces its leave over the still-open endpoint).
        let (leave, leaving) = watch::channel(false);
        let (inbox_tx, inbox_rx) = mpsc::channel(1024);
        let map_state = Arc::new(MapState::new(
            load_map(&store).await?,
            metrics.cluster_updates_refused.clone(),
        ));
        let (broadcast_tx, broadcast_rx) = mpsc::channel(1024);
        let me = Peer {
            id: node_id.clone(),
            quic: config.advertise_quic.unwrap_or(quic_addr),
            http: config.advertise_http.unwrap_or(http_addr),
            // Grows at every start (a durable counter, whatever the wall clock says), so a
            // restarted node's new identity supersedes its previous life everywhere.
            generation: store.generation(),
        };
        let credentials = PeerCredentials {
            key: cluster_key,
            claim: PeerClaim {
                cluster_id: config.cluster_id.clone(),
                node_id: node_id.clone(),
                generation: me.generation,
            },
        };
        let links = DatagramLinks::new(
            endpoint.clone(),
            credentials,
            Arc::clone(&metrics),
            inbox_tx,
        );
        let known = restore_members(&store);
        // The first node of a new cluster: nobody to merge the map from, and nothing to miss.
        let first_node = config.join.is_empty() && known.iter().all(|p| p.id == node_id);
        let membership_config = MembershipConfig {
            me,
            cluster_id: config.cluster_id.clone(),
            seeds: config.join.clone(),
            known,
            swim: MembershipConfig::lan_swim(),
        };
        let (membership, membership_task) = Membership::start(
            membership_config,
            links.clone(),
            inbox_rx,
            leaving,
            GossipHandler::new(Arc::clone(&map_state)),
            broadcast_rx,
        )
        .map_err(NodeError::Config)?;
        let persister = tokio::spawn(persist_members(
            store.clone(),
            node_id.clone(),
            membership.subscribe(),
            stopped.clone(),
        ));

        let verifier = TokenVerifier::new(token);
        let feeds = Feeds::new();
        let peers = Peers::new(links.clone());
        let cluster = Cluster::new(ClusterParts {
            me: node_id.clone(),
            store: store.clone(),
            state: map_state,
            membership: membership.clone(),
            broadcasts: broadcast_tx,
            peers,
            metrics: Arc::clone(&metrics),
            feeds: feeds.clone(),
            stop: stopped.clone(),
            synced: first_node,
            replicas: config.replicas,
        });
        let mut background = cluster::spawn_background(&cluster, stopped.clone());
        let store_handle = store.clone();
        let replicator = Replicator::new(store.clone(), config.replicas);
        replicator.attach(cluster.clone());
        background.push(tokio::spawn(replicator.clone().supervise(stopped.clone())));
        let service = ConfigService::new(store, feeds, replicator.clone());
        let hub = Hub::new(cluster.clone(), service.clone(), stopped.clone());
        let agents = Agents::new();
        let webhook_targets = TargetPolicy::new(config.webhook_allow.clone());
        let sender = Sender::new(webhook_targets.clone()).map_err(|e| {
            NodeError::Config(format!("cannot build the HTTP client for webhooks: {e}"))
        })?;
        background.push(tokio::spawn(crate::roles::push::webhooks::supervise(
            cluster.clone(),
            service.clone(),
            sender.clone(),
            stopped.clone(),
        )));
        let registry = RegistryService::new(
            service.clone(),
            NamespaceRecords::new(
                store_handle.clone(),
                cluster.feeds().clone(),
                replicator.clone(),
            ),
            sender,
        );
        background.push(tokio::spawn(crate::roles::registry::checks::supervise(
            cluster.clone(),
            registry.clone(),
            stopped.clone(),
        )));
        background.push(tokio::spawn(
            crate::roles::registry::subscriptions::supervise(
                cluster.clone(),
                registry.clone(),
                config.registry_reconcile,
                stopped.clone(),
            ),
        ));
        if let Some(listener) = proxy_listener {
            let state = Arc::new(ProxyState::default());
            for namespace in &config.proxy_namespaces {
                background.push(tokio::spawn(crate::roles::proxy::follow::follow(
                    Arc::clone(&state),
                    cluster.clone(),
                    service.clone(),
                    hub.clone(),
                    namespace.clone(),
                    stopped.clone(),
                )));
            }
            let proxy = Arc::new(Proxy::new(state, Arc::clone(&metrics), proxy_tls.is_some()));
            background.push(tokio::spawn(crate::roles::proxy::server::serve(
                listener,
                proxy,
                proxy_tls,
                config.proxy_threads,
                stopped.clone(),
            )));
        }
        let follower = Arc::new(crate::replication::Follower::new(
            store_handle.clone(),
            cfgnode_ring::Lease::default(),
        ));
        let roles = Arc::new(Roles {
            proxy: ProxyService::new(
                NamespaceRecords::new(
                    store_handle.clone(),
                    cluster.feeds().clone(),
                    replicator.clone(),
                ),
                registry.clone(),
            ),
            config: service,
            push: PushRole {
                hub,
                agents,
                webhook_targets,
            },
            registry,
            cluster: cluster.clone(),
            replication: Arc::clone(&follower),
            verifier,
            metrics: Arc::clone(&metrics),
            body_limit: body_limit(config.max_value_bytes),
            body_timeout: config.http_body_timeout,
        });
        if config.replicas >= 3 {
            background.push(tokio::spawn(crate::replication::promote::watch_holders(
                store_handle.clone(),
                cluster.clone(),
                Arc::clone(&follower),
                stopped.clone(),
            )));
        }
        if config.replicas >= 2 {
            follower.attach_replicator(replicator.clone());
            background.push(tokio::spawn(
                crate::replication::release::release_left_copies(
                    store_handle.clone(),
                    cluster.clone(),
                    Arc::clone(&follower),
                    stopped.clone(),
                ),
            ));
        }
        let app = router(Arc::clone(&roles));
        let http_app = app.clone();
        let limits = HttpLimits {
            max_connections: config.http_max_connections,
            header_read_timeout: config.http_header_timeout,
        };
        let http_server = tokio::spawn(http_api::serve(
            listener,
            app,
            limits,
            Arc::clone(&metrics),
            stopped.clone(),
        ));
        let node_cluster = cluster.clone();
        let context = Arc::new(QuicContext {
            roles,
            http: http_app,
            cluster_id: config.cluster_id.clone(),
            node_id: node_id.clone(),
            links,
        });
        let quic_server = tokio::spawn(quic_server::serve(endpoint, context, stopped));
        metrics.up.set(1);
        tracing::info!(
            node_id = %node_id,
            http = %http_addr,
            quic = %quic_addr,
            cluster_id = %config.cluster_id,
            mutual_tls = config.tls.is_some(),
            data_dir = %config.data_dir.display(),
            token_file = %token_source.path.display(),
            token_created = token_source.created,
            cluster_key_file = %key_source.path.display(),
            cluster_key_created = key_source.created,
            "cfgnode node serving"
        );
        Ok(Node {
            node_id,
            http_addr,
            proxy_addr,
            quic_addr,
            data_dir: config.data_dir,
            token_path: token_source.path,
            stop,
            leave,
            http_server,
            quic_server,
            membership,
            membership_task,
            persister,
            background,
            store: store_handle,
            cluster: node_cluster,
            replicator,
        })
    }

    /// The node's records (see [`NamespaceRecords`]) over its store and change feeds: the
    /// roles that keep records build on it. Its writes belong on the namespace's holder (where
    /// routed requests run); tests call it on the holder directly.
    pub fn records(&self) -> NamespaceRecords {
        NamespaceRecords::new(
            self.store.clone(),
            self.cluster.feeds().clone(),
            self.replicator.clone(),
        )
    }

    /// Whether a handoff could freeze `namespace` right now (no request holds its gate). For
    /// tests that check how long requests hold a namespace.
    #[doc(hidden)]
    pub fn could_freeze(&self, namespace: &str) -> bool {
        self.cluster.could_freeze(namespace)
    }

    /// Fault injection for tests: while `refuse` is true, this node refuses every handoff
    /// commit it receives.
    #[doc(hidden)]
    pub fn refuse_handoff_commits(&self, refuse: bool) {
        self.cluster.refuse_handoff_commits(refuse);
    }

    /// Fault injection for tests: cuts this node off from the nodes in `nodes` (replacing the
    /// previous set; empty heals): no SWIM datagram and no peer request passes either way, as
    /// in a network partition, while clients still reach it. Cut both sides for a symmetric
    /// partition.
    #[doc(hidden)]
    pub fn cut_off_from(&self, nodes: &[&str]) {
        let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        self.cluster.peers().links().cut(&nodes);
    }

    /// Fault injection for tests: drops every SWIM datagram to or from the nodes in `nodes`
    /// (replacing the previous set; empty heals) while peer requests and clients still pass, so
    /// this node's membership declares them down although they answer (a stale view).
    #[doc(hidden)]
    pub fn mute_membership_with(&self, nodes: &[&str]) {
        let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        self.cluster.peers().links().mute(&nodes);
    }

    /// Fault injection for tests: drops every peer request to or from the nodes in `nodes`
    /// (replacing the previous set; empty heals) while SWIM datagrams still pass, so this
    /// node's membership holds them alive although no append or promise gets through.
    #[doc(hidden)]
    pub fn block_requests_with(&self, nodes: &[&str]) {
        let nodes: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        self.cluster.peers().links().block(&nodes);
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The bound HTTP address (the real port when 0 was asked for).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound proxy address, when the node runs the proxy (`--proxy`).
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.proxy_addr
    }

    /// The bound QUIC address (the real port when 0 was asked for).
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    /// The cluster membership as this node sees it.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file holding the admin token.
    pub fn token_path(&self) -> &Path {
        &self.token_path
    }

    /// Stops accepting requests, lets in-flight requests (and their writes) finish, then closes
    /// storage: when this returns, every acknowledged write is committed and the writer stopped.
    /// Membership goes first: the node tells the cluster it leaves while its endpoint is open.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let joined =
            |e: tokio::task::JoinError| NodeError::Http(std::io::Error::other(e.to_string()));
        let _ = self.leave.send(true);
        self.membership_task.await.map_err(joined)?;
        let _ = self.stop.send(true);
        self.persister.await.map_err(joined)?;
        for task in self.background {
            task.await.map_err(joined)?;
        }
        self.quic_server.await.map_err(joined)?;
        self.http_server
            .await
            .map_err(joined)?
            .map_err(NodeError::Http)?;
        // Their store handles must not count in the wait below (the replicator also holds the
        // cluster, and with it a second handle).
        drop(self.cluster);
        drop(self.replicator);
        // Connection tasks of the HTTP server may drop their handle on the router (and so on
        // storage) a moment after the server returns: wait until ours is the last handle, so
        // "shutdown returned" means "the database is closed".
        let deadline = tokio::time::Instant::now() + STORE_CLOSE_WAIT;
        while self.store.handles() > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if self.store.handles() > 1 {
            tracing::warn!(
                handles = self.store.handles(),
                "storage still in use after shutdown; it closes when the last task ends"
            );
        }
        let store = self.store;
        // Dropping the last handle joins the writer thread: off the async workers.
        tokio::task::spawn_blocking(move || drop(store))
            .await
            .map_err(joined)?;
        tracing::info!(node_id = %self.node_id, "cfgnode node stopped");
        Ok(())
    }
}

/// Picks the QUIC TLS mode: mutual TLS from the given files, else a self-signed certificate
/// kept in the data dir (encrypted, peers not authenticated: logged as a warning).
fn tls_modes(config: &NodeConfig) -> Result<(ServerTls, ClientTls), NodeError> {
    let tls_error = |e: cfgnode_transport::TlsError| NodeError::Config(e.to_string());
    match &config.tls {
        Some(files) => {
            let roots = load_roots(&files.ca).map_err(tls_error)?;
            let identity = Identity::load(&files.cert, &files.key).map_err(tls_error)?;
            Ok((
                ServerTls::Mutual {
                    roots: roots.clone(),
                    identity: identity.clone(),
                },
                ClientTls::Verified {
                    roots,
                    identity: Some(identity),
                },
            ))
        }
        None => {
            let (identity, created) =
                Identity::load_or_generate_self_signed(&config.data_dir).map_err(tls_error)?;
            tracing::warn!(
                created,
                "QUIC runs with a self-signed certificate: traffic is encrypted but peers are not \
                 authenticated; use --tls-ca, --tls-cert and --tls-key (see `cfgnode certs`) for mutual TLS"
            );
            Ok((
                ServerTls::SelfSigned(identity),
                ClientTls::Insecure { identity: None },
            ))
        }
    }
}

/// Forwards commit stats to the metrics once they exist, then to the test hook if any.
struct LateCommitMetrics(
    Arc<std::sync::OnceLock<Arc<Metrics>>>,
    Option<Arc<dyn cfgnode_storage::CommitObserver>>,
);

impl cfgnode_storage::CommitObserver for LateCommitMetrics {
    fn on_commit(&self, stats: &cfgnode_storage::CommitStats) {
        if let Some(metrics) = self.0.get() {
            cfgnode_storage::CommitObserver::on_commit(&CommitMetrics(Arc::clone(metrics)), stats);
        }
        if let Some(hook) = &self.1 {
            hook.on_commit(stats);
        }
    }

    fn on_open_commit(&self, why: cfgnode_storage::Flush, held: std::time::Duration) {
        if let Some(metrics) = self.0.get() {
            cfgnode_storage::CommitObserver::on_open_commit(
                &CommitMetrics(Arc::clone(metrics)),
                why,
                held,
            );
        }
        if let Some(hook) = &self.1 {
            hook.on_open_commit(why, held);
        }
    }
}

/// Refuses HTTP limits that would make the admin port unusable.
/// Binds the proxy's listener, after checking the namespaces it is to serve.
async fn bind_proxy(addr: SocketAddr, namespaces: &[String]) -> Result<TcpListener, NodeError> {
    if namespaces.is_empty() {
        return Err(NodeError::Config(
            "--proxy needs the namespaces whose routes it serves: add --proxy-namespaces NS[,NS...]"
                .to_string(),
        ));
    }
    for namespace in namespaces {
        cfgnode_storage::validate_namespace(namespace)
            .map_err(|e| NodeError::Config(format!("--proxy-namespaces: {e}")))?;
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind {
            addr: addr.to_string(),
            flag: "--proxy",
            source,
        })
}

fn check_http_limits(config: &NodeConfig) -> Result<(), NodeError> {
    let most = tokio::sync::Semaphore::MAX_PERMITS;
    if config.http_max_connections == 0 || config.http_max_connections > most {
        return Err(NodeError::Config(format!(
            "--http-max-connections must be between 1 and {most}"
        )));
    }
    if config.http_header_timeout.is_zero() {
        return Err(NodeError::Config(
            "--http-header-timeout must be longer than zero".to_string(),
        ));
    }
    if config.http_body_timeout.is_zero() {
        return Err(NodeError::Config(
            "--http-body-timeout must be longer than zero".to_string(),
        ));
    }
    Ok(())
}

/// Creates the data dir (mode 0700 on Unix: it holds the admin token).
fn create_private_dir(dir: &Path) -> Result<(), NodeError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| {
        NodeError::Config(format!("cannot create the data dir {}: {e}", dir.display()))
    })
}

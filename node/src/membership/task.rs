//! The membership task: the one owner of `Foca`.
//!
//! Datagrams, timer events and the periodic seed announcement reach it through one `select!`;
//! foca's runtime only accumulates (`AccumulatingRuntime`), and the task then sends the
//! datagrams (non-blocking), schedules the timers on a heap, and publishes the member list on a
//! `watch` channel. Timers use tokio time, so tests can pause it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use foca::{
    AccumulatingRuntime, BroadcastHandler, Config, Foca, Member, OwnedNotification, State, Timer,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::codec::{BincodeCodec, open, seal};
use super::links::DatagramLinks;
use super::peer::Peer;

/// How often seeds that are not alive members are announced to, so an isolated or restarted
/// node finds its way back by itself.
const SEED_ANNOUNCE_EVERY: Duration = Duration::from_secs(2);

/// A member's state as operators see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed probes; will be declared down unless it refutes.
    Suspect,
    /// Declared down.
    Down,
}

/// One member as seen from this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Who.
    pub peer: Peer,
    /// In what state.
    pub state: MemberState,
}

/// What the membership task needs.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// This node.
    pub me: Peer,
    /// Only datagrams of this cluster are accepted.
    pub cluster_id: String,
    /// Addresses to join through.
    pub seeds: Vec<SocketAddr>,
    /// Members known from a previous run (restored from storage): shown as down until SWIM hears
    /// of them, and announced to like seeds, so a restarted node rejoins without `--join`.
    pub known: Vec<Peer>,
    /// Foca's SWIM timings (probe period, suspicion timeout, ...): tests shorten them.
    pub swim: Config,
}

impl MembershipConfig {
    /// SWIM tuned for a LAN of a few nodes: probes every 500 ms with a 250 ms round trip, and a
    /// suspect declared down after 1.2 s, so a dead node is down in under 3 s while a busy but
    /// live one has several probe rounds to answer. Packets stay under QUIC's datagram limit.
    ///
    /// Views converge after a partition within seconds, not a minute: every 2 s a node
    /// announces itself to two members it holds down (foca's default is every 65 s), and every
    /// 5 s to one member at random (default 30 s); each answer is a feed of the answerer's
    /// members. Without that, a node that missed the gossip of a member's new identity (it was
    /// itself being declared down and rejoining when the update went round) kept that member
    /// down for 6 s and more, and refused to route to it while it held namespaces (found by the
    /// five-node history test: no write acknowledged through that node while another was down).
    pub fn lan_swim() -> Config {
        let mut config = Config::new_lan(NonZeroU32::new(8).expect("8 is not zero"));
        config.probe_period = Duration::from_millis(500);
        config.probe_rtt = Duration::from_millis(250);
        config.suspect_to_down_after = Duration::from_millis(1200);
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(2),
            num_members: std::num::NonZeroUsize::new(2).expect("2 is not zero"),
        });
        config.periodic_announce = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(5),
            num_members: std::num::NonZeroUsize::new(1).expect("1 is not zero"),
        });
        config.max_packet_size = std::num::NonZeroUsize::new(1100).expect("1100 is not zero");
        config.remove_down_after = Some(Duration::from_secs(24 * 3600));
        config
    }
}

/// A handle on the running membership task.
#[derive(Debug, Clone)]
pub struct Membership {
    view: watch::Receiver<Vec<MemberView>>,
}

impl Membership {
    /// Starts the task. `inbox` receives every datagram `links` reads; `stop` ends the task
    /// (it then tells the cluster it leaves). Items sent on `broadcasts` ride SWIM packets as
    /// custom broadcasts; received ones go to `gossip`, whatever it carries (the cluster's map
    /// updates, in the node): membership knows SWIM, not what rides on it.
    pub fn start<G>(
        config: MembershipConfig,
        links: DatagramLinks,
        inbox: mpsc::Receiver<Vec<u8>>,
        stop: watch::Receiver<bool>,
        gossip: G,
        broadcasts: mpsc::Receiver<Vec<u8>>,
    ) -> Result<(Membership, tokio::task::JoinHandle<()>), String>
    where
        G: BroadcastHandler<Peer> + Send + 'static,
        G::Key: Send,
        G::Error: Send,
    {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| format!("no randomness from the OS: {e}"))?;
        let foca = Foca::with_custom_broadcast(
            config.me.clone(),
            config.swim.clone(),
            StdRng::from_seed(seed),
            BincodeCodec,
            gossip,
        );
        let initial = initial_view(&config.me, &config.known);
        let (publish, view) = watch::channel(initial);
        let task = tokio::spawn(run(foca, config, links, inbox, stop, publish, broadcasts));
        Ok((Membership { view }, task))
    }

    /// A receiver of member-list changes (for persistence).
    pub fn subscribe(&self) -> watch::Receiver<Vec<MemberView>> {
        self.view.clone()
    }

    /// Every member this node knows, itself included, by id.
    pub fn members(&self) -> Vec<MemberView> {
        self.view.borrow().clone()
    }

    /// Waits until `f` holds for the member list (for tests and readiness).
    pub async fn wait_for(&mut self, f: impl FnMut(&Vec<MemberView>) -> bool) {
        let _ = self.view.wait_for(f).await;
    }
}

type FocaInstance<G> = Foca<Peer, BincodeCodec, StdRng, G>;

async fn run<G: BroadcastHandler<Peer>>(
    mut foca: FocaInstance<G>,
    config: MembershipConfig,
    links: DatagramLinks,
    mut inbox: mpsc::Receiver<Vec<u8>>,
    mut stop: watch::Receiver<bool>,
    publish: watch::Sender<Vec<MemberView>>,
    mut broadcasts: mpsc::Receiver<Vec<u8>>,
) {
    let mut runtime = AccumulatingRuntime::new();
    let mut timers = Timers::default();
    let mut announce = tokio::time::interval(SEED_ANNOUNCE_EVERY);
    let placeholder = |addr: SocketAddr| Peer {
        id: String::new(),
        quic: addr,
        http: addr,
        generation: 0,
    };
    // Members of a previous run stay out of foca: declaring them down there would make foca
    // tell each of them, at its first message, that it is down, and every one would rejoin
    // under a new generation (closing its peers' connections) for one node's restart. They
    // show as down in the published view until SWIM hears of them (see `snapshot`).
    let restored: Vec<Peer> = config
        .known
        .iter()
        .filter(|p| p.id != config.me.id)
        .cloned()
        .collect();
    let mut me = config.me.clone();
    let mut targets: Vec<SocketAddr> = config.seeds.clone();
    targets.extend(
        config
            .known
            .iter()
            .filter(|p| p.id != config.me.id)
            .map(|p| p.quic),
    );
    targets.sort_unstable();
    targets.dedup();
    loop {
        let next_deadline = timers.next_deadline();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            datagram = inbox.recv() => {
                let Some(datagram) = datagram else { break };
                if let Some(payload) = open(&config.cluster_id, &datagram)
                    && let Err(e) = foca.handle_data(payload, &mut runtime)
                {
                    tracing::debug!(error = %e, "SWIM packet refused");
                }
            }
            _ = async { tokio::time::sleep_until(next_deadline.unwrap_or_else(Instant::now)).await }, if next_deadline.is_some() => {
                while let Some(event) = timers.pop_due(Instant::now()) {
                    if let Err(e) = foca.handle_timer(event, &mut runtime) {
                        tracing::debug!(error = %e, "SWIM timer failed");
                    }
                }
            }
            Some(item) = broadcasts.recv() => {
                match foca.add_broadcast(&item) {
                    // Send it now to a few members instead of waiting for the next probe.
                    Ok(_) => {
                        if let Err(e) = foca.broadcast(&mut runtime) {
                            tracing::debug!(error = %e, "cluster broadcast not sent");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cluster update not broadcast"),
                }
            }
            _ = announce.tick() => {
                let alive: Vec<SocketAddr> = foca.iter_members().map(|m| m.id().quic).collect();
                for seed in targets.iter().filter(|s| !alive.contains(s) && **s != config.me.quic) {
                    if let Err(e) = foca.announce(placeholder(*seed), &mut runtime) {
                        tracing::debug!(%seed, error = %e, "announce failed");
                    }
                }
            }
        }
        // Drain what foca asked for.
        drain(&mut runtime, &links, &config.cluster_id, &mut timers);
        let mut changed = false;
        let mut rejoined = false;
        while let Some(note) = runtime.to_notify() {
            match note {
                OwnedNotification::MemberUp(peer) => {
                    tracing::info!(member = %peer.id, addr = %peer.quic, "member up")
                }
                OwnedNotification::MemberDown(peer) => {
                    tracing::warn!(member = %peer.id, addr = %peer.quic, "member down")
                }
                OwnedNotification::Rejoin(renewed) => {
                    tracing::warn!(
                        generation = renewed.generation,
                        "this node was declared down; rejoined under a new generation"
                    );
                    // Peers drop connections to the old generation: claim the new one.
                    links.renew_claim(renewed.generation);
                    me = renewed;
                    rejoined = true;
                }
                OwnedNotification::Rename(old, new) => {
                    tracing::info!(member = %new.id, from = old.generation, to = new.generation, "member renamed")
                }
                _ => {}
            }
            changed = true;
        }
        if rejoined {
            revive_suspects(&mut foca, &mut runtime);
            drain(&mut runtime, &links, &config.cluster_id, &mut timers);
        }
        // Foca tells of ups, downs and renames, but not of a member turning suspect or of a
        // suspect refuting: the published view is compared with foca's state after every
        // event, or a member that refuted a suspicion would stay "suspect" here (no longer
        // alive for routing and promotion) until some other member changed.
        let now = snapshot(&foca, &me, &restored);
        publish.send_if_modified(|current| {
            if changed || *current != now {
                *current = now;
                true
            } else {
                false
            }
        });
    }
    let _ = foca.leave_cluster(&mut runtime);
    while let Some((to, data)) = runtime.to_send() {
        links.send(to.quic, seal(&config.cluster_id, &data));
    }
    // Give the leave datagrams a moment to go out before the links close.
    tokio::time::sleep(Duration::from_millis(50)).await;
    links.close();
}

/// The timers foca asked for, by deadline.
#[derive(Default)]
struct Timers {
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    events: BTreeMap<u64, Timer<Peer>>,
    next: u64,
}

impl Timers {
    fn schedule(&mut self, after: Duration, event: Timer<Peer>) {
        self.next += 1;
        self.due.push(Reverse((Instant::now() + after, self.next)));
        self.events.insert(self.next, event);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    /// The next timer whose deadline is at or before `now`.
    fn pop_due(&mut self, now: Instant) -> Option<Timer<Peer>> {
        while let Some(Reverse((at, id))) = self.due.peek().copied() {
            if at > now {
                return None;
            }
            self.due.pop();
            if let Some(event) = self.events.remove(&id) {
                return Some(event);
            }
        }
        None
    }
}

/// Sends the datagrams and schedules the timers foca asked for.
fn drain(
    runtime: &mut AccumulatingRuntime<Peer>,
    links: &DatagramLinks,
    cluster_id: &str,
    timers: &mut Timers,
) {
    while let Some((to, data)) = runtime.to_send() {
        links.send(to.quic, seal(cluster_id, &data));
    }
    while let Some((after, event)) = runtime.to_schedule() {
        timers.schedule(after, event);
    }
}

/// After this node rejoined under a new generation: foca drops every timer it had set (a new
/// identity starts a new timer token), among them the ones that would declare its current
/// suspects down. A suspect it probed itself would then stay suspect for good unless it
/// refutes, and it may never hear that it is suspected (the gossip about it went out while
/// this node was cut off). Each is taken back as alive here, one incarnation up and not
/// gossiped: the probes that follow decide again, with fresh timers: a live member answers,
/// a dead one is suspected and declared down as usual.
fn revive_suspects<G: BroadcastHandler<Peer>>(
    foca: &mut FocaInstance<G>,
    runtime: &mut AccumulatingRuntime<Peer>,
) {
    let suspects: Vec<Member<Peer>> = foca
        .iter_membership_state()
        .filter(|m| m.state() == State::Suspect)
        .map(|m| {
            Member::new(
                m.id().clone(),
                m.incarnation().wrapping_add(1),
                State::Alive,
            )
        })
        .collect();
    if suspects.is_empty() {
        return;
    }
    tracing::info!(
        suspects = ?suspects.iter().map(|m| m.id().id.clone()).collect::<Vec<_>>(),
        "rejoined: probing the members this node suspected again"
    );
    if let Err(e) = foca.apply_many(suspects.into_iter(), false, runtime) {
        tracing::debug!(error = %e, "suspects not revived");
    }
}

/// The member list published before the task's first turn: this node alive, and the members
/// of a previous run as down, as [`snapshot`] shows them until SWIM hears of them.
///
/// Why not this node alone: routing reads "every replica set is this node alone" off the
/// member list (`View::solo`), and a node that is alone serves reads without a lease and
/// acknowledges writes without a quorum. A restarted holder whose first list was itself
/// alone could do both with its stale copy until the task's first turn published the rest.
fn initial_view(me: &Peer, known: &[Peer]) -> Vec<MemberView> {
    let mut by_id: BTreeMap<String, MemberView> = known
        .iter()
        .filter(|p| p.id != me.id)
        .map(|p| {
            let view = MemberView {
                peer: p.clone(),
                state: MemberState::Down,
            };
            (p.id.clone(), view)
        })
        .collect();
    by_id.insert(
        me.id.clone(),
        MemberView {
            peer: me.clone(),
            state: MemberState::Alive,
        },
    );
    by_id.into_values().collect()
}

/// The member list: ourselves, foca's full membership state (down members included), and the
/// members restored from a previous run that SWIM has not heard of yet, as down.
fn snapshot<G: BroadcastHandler<Peer>>(
    foca: &FocaInstance<G>,
    me: &Peer,
    restored: &[Peer],
) -> Vec<MemberView> {
    let mut by_id: BTreeMap<String, MemberView> = BTreeMap::new();
    for member in foca.iter_membership_state() {
        let state = match member.state() {
            State::Alive => MemberState::Alive,
            State::Suspect => MemberState::Suspect,
            State::Down => MemberState::Down,
        };
        let view = MemberView {
            peer: member.id().clone(),
            state,
        };
        // A restarted node appears under several generations: keep the newest.
        match by_id.get(&view.peer.id) {
            Some(existing) if existing.peer.generation >= view.peer.generation => {}
            _ => {
                by_id.insert(view.peer.id.clone(), view);
            }
        }
    }
    // Restored members SWIM has not heard of, as down; this node as it is now, alive.
    for view in initial_view(me, restored) {
        if view.peer.id == me.id {
            by_id.insert(view.peer.id.clone(), view);
        } else {
            by_id.entry(view.peer.id.clone()).or_insert(view);
        }
    }
    by_id.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, port: u16) -> Peer {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        Peer {
            id: id.to_string(),
            quic: addr,
            http: addr,
            generation: 1,
        }
    }

    #[test]
    fn a_restarted_node_first_shows_the_members_of_its_last_run_as_down() {
        let me = peer("n3", 3);
        let known = [peer("n1", 1), peer("n2", 2), peer("n3", 9)];
        let view = initial_view(&me, &known);
        let states: Vec<(&str, MemberState)> =
            view.iter().map(|m| (m.peer.id.as_str(), m.state)).collect();
        assert_eq!(
            states,
            [
                ("n1", MemberState::Down),
                ("n2", MemberState::Down),
                ("n3", MemberState::Alive)
            ]
        );
        assert_eq!(view[2].peer.quic, me.quic, "this node as it is now");
        assert_eq!(
            initial_view(&me, &[]).len(),
            1,
            "a new node knows itself only"
        );
    }
}

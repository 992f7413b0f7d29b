//! Limits and tunables of a core.

use std::time::Duration;

/// How a core behaves; every limit the protocol documents lives here.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// This core's site: its region's name, or `{region}_{shard}` in a
    /// sharded region. Stamped on every message it accepts, and the name
    /// other sites replicate to and from.
    pub region: String,
    /// Every region's shard count: which site an id belongs to.
    pub topology: meridian_wire::sites::Topology,
    /// Largest message payload, bytes.
    pub max_payload_bytes: usize,
    /// Largest group, members (creator included).
    pub max_group_members: usize,
    /// Longest group name, characters.
    pub max_name_chars: usize,
    /// How long undelivered inbox entries and history are kept.
    pub retention: Duration,
    /// How often the retention sweep runs (also the versionstamp clock's tick).
    pub sweep_interval: Duration,
    /// A remote or client HLC further ahead of local wall time than this is refused.
    pub max_clock_offset: Duration,
    /// Inbox entries per delivery frame.
    pub delivery_batch: usize,
    /// Deliveries in flight to one device before delivery waits for an ack.
    pub max_unacked: usize,
    /// Bytes of deliveries in flight to one device before delivery waits
    /// for an ack: below the gateway's 4 MiB per-session buffer, so a
    /// device that reads is never cut off as slow for acking late.
    pub max_unacked_bytes: usize,
    /// Sends being processed at once on one gateway stream (admission control).
    pub max_inflight_per_stream: usize,
    /// Active (unrevoked) devices one account may have.
    pub max_devices_per_user: usize,
    /// Sessions one device may have attached at once; a new one beyond
    /// replaces the oldest (`session_replaced`).
    pub max_sessions_per_device: usize,
    /// Inbox entries one user's sends may create per second, sustained: a
    /// send costs one per recipient, so a group of 100 weighs 100 direct
    /// messages. Every device of the user draws from it.
    pub fanout_per_second: f64,
    /// The fan-out a user may spend at once.
    pub fanout_burst: f64,
    /// New device sessions the core admits per second (and in a burst):
    /// past it an attach is shed with a wait, which the client's gateway
    /// passes on as `go_away` `busy`.
    pub attaches_per_second: f64,
    /// Backlog reads (an inbox read from the store, one batch) running at
    /// once across every session; the rest wait their turn.
    pub sync_slots: usize,
    /// Sessions that may wait for a backlog-read slot; past it new
    /// attaches are shed, so a storm waits at its clients, not in memory
    /// here.
    pub max_waiting_syncs: usize,
    /// Media limits.
    pub media: MediaLimits,
    /// Delivery follows the store's inbox feed where it has one (the native
    /// engines); false makes it watch the inbox head instead, as on
    /// FoundationDB — how the tests run that path on the native engines.
    pub follow_inbox_feed: bool,
}

/// Limits and timings of media uploads and downloads.
#[derive(Debug, Clone)]
pub struct MediaLimits {
    /// Largest upload, bytes.
    pub max_bytes: u64,
    /// Media a message may carry.
    pub max_attachments: usize,
    /// How long an upload URL is valid (at most 15 minutes).
    pub upload_ttl: Duration,
    /// How long a download URL is valid.
    pub download_ttl: Duration,
    /// How long `complete` waits for the check before answering `checking`.
    pub complete_wait: Duration,
    /// How long after its upload URL expired an upload that was never
    /// completed (or was rejected) is kept before the sweep deletes it.
    pub abandoned_grace: Duration,
    /// Upload slots one user may take per day (a token bucket: the day's
    /// quota at once, refilling over the day).
    pub uploads_per_day: f64,
    /// Bytes one user may declare for upload per day.
    pub upload_bytes_per_day: u64,
}

impl Default for MediaLimits {
    fn default() -> Self {
        Self {
            max_bytes: 100 * 1024 * 1024,
            max_attachments: 10,
            upload_ttl: Duration::from_secs(15 * 60),
            download_ttl: Duration::from_secs(5 * 60),
            // Under the gateway's 5 s deadline for a unary call to a core.
            complete_wait: Duration::from_secs(4),
            abandoned_grace: Duration::from_secs(3600),
            uploads_per_day: 1_000.0,
            upload_bytes_per_day: 5 * 1024 * 1024 * 1024,
        }
    }
}

impl CoreConfig {
    /// Defaults for the site `region` of an unsharded deployment.
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            topology: meridian_wire::sites::Topology::unsharded(),
            max_payload_bytes: 64 * 1024,
            max_group_members: meridian_wire::limits::MAX_GROUP_MEMBERS,
            max_name_chars: meridian_wire::limits::MAX_GROUP_NAME_CHARS,
            retention: Duration::from_secs(30 * 24 * 3600),
            sweep_interval: Duration::from_secs(60),
            max_clock_offset: Duration::from_millis(500),
            delivery_batch: 128,
            max_unacked: 1024,
            max_unacked_bytes: 2 * 1024 * 1024,
            max_inflight_per_stream: 4096,
            max_devices_per_user: 16,
            max_sessions_per_device: 4,
            fanout_per_second: 2_000.0,
            fanout_burst: 10_000.0,
            // Measured on 2 cores (`meridian bench --storm 100000`): at
            // 20,000 a storm of 100,000 stalled commits for 5 s and made
            // the core unready; at 5,000 none stalled and everyone else's
            // p99 stayed under 0.4 s (docs/benchmarks.md).
            attaches_per_second: 5_000.0,
            sync_slots: 64,
            max_waiting_syncs: 20_000,
            media: MediaLimits::default(),
            follow_inbox_feed: true,
        }
    }
}

//! The sizes an OPC UA source agrees with its server: what the client accepts in one response
//! (Hello, OPC UA Part 6 §7.1.2.3), how many operations one request carries (the server's
//! `OperationLimits`, Part 5 §6.3.11), how many notifications one Publish response may hold, and
//! how long a monitored item's queue must be.

use std::time::Duration;

use opcua::types::{NodeId, ReadValueId, StatusCode, Variant};

/// The largest response message the client accepts, in bytes: Hello's MaxMessageSize (Part 6
/// §7.1.2.3; a server answers a larger response with Bad_ResponseTooLarge). async-opcua's
/// default, 320 KiB, held 2 000 data changes at most.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The client's receive chunk size, in bytes (Hello's ReceiveBufferSize; async-opcua's default).
pub const CHUNK_BYTES: usize = 65_535;

/// Hello's MaxChunkCount: enough chunks for a [`MAX_MESSAGE_BYTES`] response even when each
/// chunk carries only half its size in body (headers, signature, padding).
pub const MAX_CHUNKS: usize = MAX_MESSAGE_BYTES.div_ceil(CHUNK_BYTES / 2);

/// The longest array the client decodes, in elements. async-opcua allocates an array at its
/// announced length before it reads the elements, so this bounds what one forged length can
/// make the client allocate (≈ 100 bytes per decoded data change: ≈ 10 MB). Every array the
/// source asks for is shorter: notifications per Publish ([`notifications_per_publish`]),
/// results of one batch ([`MonitoredItemBatches`]), the namespace array.
pub const MAX_ARRAY_LENGTH: usize = 100_000;

/// The bytes one data change is budgeted in a Publish response when sizing
/// `maxNotificationsPerPublish`: a scalar with status and source timestamp encodes in ≤ 38
/// bytes (client handle 4, DataValue mask 1, Variant ≤ 9, StatusCode 4, DateTime 8, …); the rest
/// leaves room for short strings.
pub const NOTIFICATION_BYTES: usize = 160;

/// Monitored items per CreateMonitoredItems request when the server sets no
/// MaxMonitoredItemsPerCall: ≈ 100 bytes each, so a request stays near 100 KB, below the
/// smallest request size common servers accept (async-opcua's own default is 320 KiB).
pub const DEFAULT_ITEMS_PER_CALL: usize = 1_000;

/// `maxNotificationsPerPublish` for the subscription (Part 4 §5.13.2): as many data changes as
/// fit a response of [`MAX_MESSAGE_BYTES`] at [`NOTIFICATION_BYTES`] each, and no more than an
/// array may hold ([`MAX_ARRAY_LENGTH`]). More pending changes come in the next Publish response
/// (`moreNotifications`), which async-opcua asks for at once.
pub fn notifications_per_publish() -> u32 {
    (MAX_MESSAGE_BYTES / NOTIFICATION_BYTES).min(MAX_ARRAY_LENGTH) as u32
}

/// A monitored item's queue size (Part 4 §5.12.1.5): every sample taken between two Publish
/// responses, `ceil(publishing interval / sampling interval) + 1`, at least 1 and at most
/// [`MAX_ARRAY_LENGTH`]; a sampling interval of 0 (the server's fastest) counts as 1 ms. The
/// server sets the Overflow bit on a value when its
/// queue overflowed all the same (Part 4 §7.39.1).
pub fn queue_size(publishing: Duration, sampling: Duration) -> u32 {
    let sampling = sampling.max(Duration::from_millis(1));
    let per_publish = publishing.as_nanos().div_ceil(sampling.as_nanos());
    (per_publish + 1).clamp(1, MAX_ARRAY_LENGTH as u128) as u32
}

/// The server's OperationLimits this source obeys (Part 5 §6.3.11; 0 there means "no limit").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationLimits {
    /// MaxNodesPerRead (`Server_ServerCapabilities_OperationLimits_MaxNodesPerRead`, i=11705).
    pub max_nodes_per_read: u32,
    /// MaxMonitoredItemsPerCall (`…_MaxMonitoredItemsPerCall`, i=11714).
    pub max_monitored_items_per_call: u32,
    /// MaxNodesPerTranslateBrowsePathsToNodeIds (`…_MaxNodesPerTranslateBrowsePathsToNodeIds`,
    /// i=11712).
    pub max_nodes_per_translate: u32,
}

impl OperationLimits {
    /// NodeIds of the limits, in the order [`OperationLimits::from_values`] takes them.
    pub fn nodes() -> [ReadValueId; 3] {
        [
            ReadValueId::from(NodeId::new(0, 11705u32)),
            ReadValueId::from(NodeId::new(0, 11714u32)),
            ReadValueId::from(NodeId::new(0, 11712u32)),
        ]
    }

    /// The limits from the values read at [`OperationLimits::nodes`]; a limit the server does not
    /// expose (bad status, absent, not an unsigned integer) is 0, no limit.
    pub fn from_values(values: &[(StatusCode, Option<&Variant>)]) -> Self {
        let limit = |index: usize| match values.get(index) {
            Some((status, Some(Variant::UInt32(n)))) if status.is_good() => *n,
            _ => 0,
        };
        Self {
            max_nodes_per_read: limit(0),
            max_monitored_items_per_call: limit(1),
            max_nodes_per_translate: limit(2),
        }
    }

    /// Nodes per Read request (type attributes of writable variables): MaxNodesPerRead, or
    /// [`DEFAULT_ITEMS_PER_CALL`] when the server sets none (or a larger one), never 0.
    pub fn reads_per_call(self) -> usize {
        per_call(self.max_nodes_per_read)
    }

    /// Browse paths per TranslateBrowsePathsToNodeIds request: the server's limit, or
    /// [`DEFAULT_ITEMS_PER_CALL`] when it sets none (or a larger one), never 0.
    pub fn translations_per_call(self) -> usize {
        per_call(self.max_nodes_per_translate)
    }

    /// Monitored items per CreateMonitoredItems request: MaxMonitoredItemsPerCall, or
    /// [`DEFAULT_ITEMS_PER_CALL`] when the server sets none (or a larger one), never 0.
    pub fn items_per_call(self) -> usize {
        match self.max_monitored_items_per_call as usize {
            0 => DEFAULT_ITEMS_PER_CALL,
            n => n.min(DEFAULT_ITEMS_PER_CALL),
        }
    }
}

fn per_call(limit: u32) -> usize {
    match limit as usize {
        0 => DEFAULT_ITEMS_PER_CALL,
        n => n.min(DEFAULT_ITEMS_PER_CALL),
    }
}

/// Whether a failed request was too large for the server or for its answer to fit (the client
/// halves the batch and tries again): Bad_RequestTooLarge, Bad_ResponseTooLarge,
/// Bad_EncodingLimitsExceeded, Bad_TcpMessageTooLarge, Bad_TooManyOperations (Part 4 §7.39,
/// Part 6 §7.1.5).
pub fn too_large(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BadRequestTooLarge
            | StatusCode::BadResponseTooLarge
            | StatusCode::BadEncodingLimitsExceeded
            | StatusCode::BadTcpMessageTooLarge
            | StatusCode::BadTooManyOperations
    )
}

/// Splits `count` monitored items into batches of at most `per_call`, halving the batch size
/// each time the server finds a request too large ([`too_large`]), down to one item.
#[derive(Debug)]
pub struct MonitoredItemBatches {
    next: usize,
    count: usize,
    per_call: usize,
}

impl MonitoredItemBatches {
    /// Batches over items `0..count`, at most `per_call` (≥ 1) each.
    pub fn new(count: usize, per_call: usize) -> Self {
        Self {
            next: 0,
            count,
            per_call: per_call.max(1),
        }
    }

    /// The next range of items to send, `None` when all are sent.
    pub fn next_range(&self) -> Option<std::ops::Range<usize>> {
        (self.next < self.count).then(|| self.next..(self.next + self.per_call).min(self.count))
    }

    /// The range given by [`Self::next_range`] was created.
    pub fn done(&mut self, range: std::ops::Range<usize>) {
        self.next = range.end;
    }

    /// The server refused the last range as too large: the next range is half as long. Returns
    /// `false` when it was a single item already (nothing smaller to try).
    pub fn halve(&mut self) -> bool {
        if self.per_call == 1 {
            return false;
        }
        self.per_call /= 2;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_holds_every_sample_of_a_publishing_interval_plus_one() {
        let ms = Duration::from_millis;
        for (publishing, sampling, queue) in [
            (ms(500), ms(250), 3),
            (ms(100), ms(50), 3),
            (ms(100), ms(30), 5),
            (ms(100), ms(100), 2),
            (ms(100), ms(1000), 2),
            (ms(1000), ms(0), 1001),
            (Duration::from_secs(3600), ms(0), MAX_ARRAY_LENGTH as u32),
        ] {
            assert_eq!(
                queue_size(publishing, sampling),
                queue,
                "{publishing:?} / {sampling:?}"
            );
        }
    }

    #[test]
    fn a_full_publish_response_fits_the_message_limit() {
        let n = notifications_per_publish() as usize;
        assert!(n * NOTIFICATION_BYTES <= MAX_MESSAGE_BYTES);
        assert!(n <= MAX_ARRAY_LENGTH);
        assert!(
            n >= 20_000,
            "a 20 000-item server's changes fit one response"
        );
        const { assert!(MAX_CHUNKS * (CHUNK_BYTES / 2) >= MAX_MESSAGE_BYTES) };
    }

    #[test]
    fn limits_read_from_the_server_or_none() {
        let limits = OperationLimits::from_values(&[
            (StatusCode::Good, Some(&Variant::UInt32(500))),
            (StatusCode::BadNodeIdUnknown, None),
        ]);
        assert_eq!(limits.max_nodes_per_read, 500);
        assert_eq!(limits.items_per_call(), DEFAULT_ITEMS_PER_CALL);
        let limits = OperationLimits::from_values(&[
            (StatusCode::Good, Some(&Variant::Int32(5))),
            (StatusCode::Good, Some(&Variant::UInt32(250))),
        ]);
        assert_eq!(limits.max_nodes_per_read, 0);
        assert_eq!(limits.items_per_call(), 250);
    }

    #[test]
    fn batches_cover_every_item_once_and_halve_when_too_large() {
        let mut batches = MonitoredItemBatches::new(2_500, 1_000);
        let mut sent = Vec::new();
        let mut refused_once = false;
        while let Some(range) = batches.next_range() {
            if range.len() > 600 && !refused_once {
                refused_once = true;
                assert!(batches.halve());
                continue;
            }
            sent.push(range.clone());
            batches.done(range);
        }
        assert_eq!(
            sent,
            vec![0..500, 500..1000, 1000..1500, 1500..2000, 2000..2500]
        );
        let mut one = MonitoredItemBatches::new(3, 1);
        assert!(!one.halve());
        assert_eq!(one.next_range(), Some(0..1));
    }
}

//! Deliberate bugs, for proving that the simulation's checker catches real ones. Each switch
//! is a bug a storage engine could plausibly have. They exist only with the
//! `fault-injection` feature and are per thread (the simulation runs a whole cluster on one
//! thread), so a test that turns one on cannot disturb a test running beside it.

/// Which bugs are switched on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    /// The log store tells Raft entries are durable as soon as they are written, before the
    /// disk has synced them.
    pub ack_before_durable: bool,
    /// The state machine appends whatever the expected revision says.
    pub skip_expected_version: bool,
    /// The state machine applies the commands of a batch of entries in reverse order.
    pub apply_out_of_order: bool,
    /// After a restart the state machine no longer finds event ids written before it.
    pub forget_event_ids: bool,
    /// The state machine takes an append whose ids are stored as a retry without comparing
    /// the events' content: an id reused for another event is acknowledged as already written.
    pub ignore_retry_content: bool,
    /// The tag index leaves out the tags of the last event of every append.
    pub index_skips_tag: bool,
    /// The state machine appends whatever a DCB append condition says.
    pub skip_dcb_check: bool,
    /// Reads ignore retention: events below truncate-before (or a soft delete, max count,
    /// max age) are returned as if nothing hid them.
    pub show_hidden_events: bool,
    /// Scavenge removes an append group when any of its events is hidden, not only when all
    /// are: live events are lost.
    pub scavenge_drops_partly_hidden: bool,
    /// Single appends to a tombstoned stream are written as if it were live.
    pub append_to_tombstoned: bool,
    /// The store cuts damaged files at open but records no repair: a node whose log lost
    /// entries it acknowledged votes at once.
    pub forget_repair: bool,
    /// A consumer-group checkpoint's done ranges are stored one key too long (their end taken
    /// as inclusive): an event in flight is counted as done and never delivered again.
    pub checkpoint_off_by_one: bool,
    /// The state machine stores a grant on its prefix less the last character: the grant
    /// covers names it was never given for (`orders-` becomes `orders`, which `ordersX` too
    /// starts with).
    pub grant_wrong_prefix: bool,
    /// Apply writes a new security state but does not tell the nodes' caches (`AuthView`)
    /// that it changed: a node goes on authenticating with the state it read before (a
    /// revoked token still works there).
    pub auth_cache_not_invalidated: bool,
    /// A consumer-group update writes the group's state with the checkpoint it had when it
    /// was created (its start): the progress since is forgotten.
    pub update_forgets_checkpoint: bool,
    /// Snapshots ignore forgetting steps (scavenge, erase), as they did before kept heads: a
    /// forgetting step neither stops the readers of an earlier snapshot nor records one at
    /// its own point, and a snapshot leaves out the stream heads kept without their group.
    /// The node that installs one applies the log after its point on another state than the
    /// others did (a stream's next revision lost, or groups missing that its point held).
    pub snapshot_ignores_forgetting: bool,
    /// A consumer-group create stores the group without the filter it asked for: the group
    /// delivers every stream of `$all`.
    pub group_filter_dropped: bool,
    /// Removing a role leaves it assigned to its members: a role added again later under
    /// the same name gives them its grants without anyone assigning it.
    pub role_removal_keeps_members: bool,
    /// A consumer-group create is not checked against the limit of live groups.
    pub group_limit_ignored: bool,
    /// A `$group-` stream shows (and a scavenge keeps) one event fewer than the group history
    /// it is configured with.
    pub group_history_keeps_too_few: bool,
}

#[cfg(feature = "fault-injection")]
thread_local! {
    static BUGS: std::cell::Cell<Bugs> = const { std::cell::Cell::new(Bugs {
        ack_before_durable: false,
        skip_expected_version: false,
        apply_out_of_order: false,
        forget_event_ids: false,
        ignore_retry_content: false,
        index_skips_tag: false,
        skip_dcb_check: false,
        show_hidden_events: false,
        scavenge_drops_partly_hidden: false,
        append_to_tombstoned: false,
        forget_repair: false,
        checkpoint_off_by_one: false,
        grant_wrong_prefix: false,
        auth_cache_not_invalidated: false,
        update_forgets_checkpoint: false,
        snapshot_ignores_forgetting: false,
        group_filter_dropped: false,
        role_removal_keeps_members: false,
        group_limit_ignored: false,
        group_history_keeps_too_few: false,
    }) };
}

/// Switches bugs on (or off) for code running on this thread.
#[cfg(feature = "fault-injection")]
pub fn set(bugs: Bugs) {
    BUGS.with(|b| b.set(bugs));
}

/// The bugs switched on for this thread: none, unless built with `fault-injection`.
#[inline]
pub(crate) fn active() -> Bugs {
    #[cfg(feature = "fault-injection")]
    {
        BUGS.with(|b| b.get())
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        Bugs::default()
    }
}

/// The `apply_out_of_order` bug: with it on, the whole batch openraft streams to `apply` is
/// collected and its commands run in reverse order, while the log ids (and the clients waiting
/// on them) stay where they were.
#[cfg(feature = "fault-injection")]
pub(crate) async fn maybe_reverse_payloads<'a, S, R>(
    entries: S,
    bugs: Bugs,
) -> futures_util::stream::BoxStream<'a, S::Item>
where
    S: futures_util::Stream<Item = Result<(crate::raft_types::Entry, R), std::io::Error>>
        + Send
        + 'a,
    R: Send + 'a,
{
    use futures_util::StreamExt;
    if !bugs.apply_out_of_order {
        return entries.boxed();
    }
    let mut items: Vec<S::Item> = entries.collect().await;
    let mut payloads: Vec<_> = items
        .iter_mut()
        .filter_map(|item| item.as_mut().ok())
        .map(|(e, _)| std::mem::replace(&mut e.payload, openraft::EntryPayload::Blank))
        .collect();
    payloads.reverse();
    for ((entry, _), payload) in items
        .iter_mut()
        .filter_map(|item| item.as_mut().ok())
        .zip(payloads)
    {
        entry.payload = payload;
    }
    futures_util::stream::iter(items).boxed()
}

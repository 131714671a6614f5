//! The filter of a `$all` subscription or consumer group, and its wire form: below both
//! `subscribe` and `client/groups`, which take it.

use crate::proto;

/// Server-side filters of a `$all` subscription or consumer group; an event passes if it
/// matches every one given. Filtered subscriptions get
/// [`crate::SubscriptionMessage::Checkpoint`]s.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionFilter {
    pub stream_prefix: Option<String>,
    pub event_type_prefix: Option<String>,
    /// A regular expression (Rust `regex` syntax) the whole event type must match.
    pub event_type_regex: Option<String>,
}

impl SubscriptionFilter {
    pub fn stream_prefix(self, prefix: impl Into<String>) -> Self {
        SubscriptionFilter {
            stream_prefix: Some(prefix.into()),
            ..self
        }
    }

    pub fn event_type_prefix(self, prefix: impl Into<String>) -> Self {
        SubscriptionFilter {
            event_type_prefix: Some(prefix.into()),
            ..self
        }
    }

    pub fn event_type_regex(self, regex: impl Into<String>) -> Self {
        SubscriptionFilter {
            event_type_regex: Some(regex.into()),
            ..self
        }
    }
}

impl From<&SubscriptionFilter> for proto::SubscriptionFilter {
    /// The wire has no "absent": `None` goes as the empty string, which the server ignores.
    fn from(filter: &SubscriptionFilter) -> Self {
        proto::SubscriptionFilter {
            stream_prefix: filter.stream_prefix.clone().unwrap_or_default(),
            event_type_prefix: filter.event_type_prefix.clone().unwrap_or_default(),
            event_type_regex: filter.event_type_regex.clone().unwrap_or_default(),
        }
    }
}

//! The `$all` filter, compiled: one implementation for catch-up subscriptions on `$all`
//! (`node/src/api/subscribe`) and consumer groups on `$all` (their dispatchers, and the
//! check of a group's definition at apply, which compiles it exactly as delivery will).

use crate::types::SourceFilter;

/// Longest part of a filter (a prefix, a regular expression), in bytes. A group's filter is
/// stored in its state and in the Raft log: it must stay small.
pub const MAX_FILTER_PART_BYTES: usize = 1_024;
/// Largest compiled event-type regex, so a filter cannot make a node allocate without bound.
pub const MAX_FILTER_REGEX_BYTES: usize = 1024 * 1024;

/// A part of a filter that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct BadFilter {
    /// `stream_prefix`, `event_type_prefix` or `event_type_regex`.
    pub field: &'static str,
    pub why: String,
}

/// `filter` with its empty parts as absent, or `None` if every part is: one way to say
/// "every event".
pub fn normalized(filter: &SourceFilter) -> Option<SourceFilter> {
    let part = |p: &Option<String>| p.clone().filter(|s| !s.is_empty());
    let out = SourceFilter {
        stream_prefix: part(&filter.stream_prefix),
        event_type_prefix: part(&filter.event_type_prefix),
        event_type_regex: part(&filter.event_type_regex),
    };
    (out != SourceFilter::default()).then_some(out)
}

/// A filter ready to test events: an event passes if it matches every part given.
#[derive(Debug, Clone)]
pub struct EventFilter {
    stream_prefix: Option<String>,
    event_type_prefix: Option<String>,
    event_type_regex: Option<regex::Regex>,
}

impl EventFilter {
    /// `None` when no part is given (an empty part is not given: the wire's "absent").
    pub fn compile(filter: &SourceFilter) -> Result<Option<EventFilter>, BadFilter> {
        let part =
            |field: &'static str, value: &Option<String>| -> Result<Option<String>, BadFilter> {
                match value.as_deref() {
                    None | Some("") => Ok(None),
                    Some(text) if text.len() > MAX_FILTER_PART_BYTES => Err(BadFilter {
                        field,
                        why: format!("{} bytes; the limit is {MAX_FILTER_PART_BYTES}", text.len()),
                    }),
                    Some(text) if text.contains('\0') => Err(BadFilter {
                        field,
                        why: "contains a NUL character".into(),
                    }),
                    Some(text) => Ok(Some(text.to_owned())),
                }
            };
        let stream_prefix = part("stream_prefix", &filter.stream_prefix)?;
        let event_type_prefix = part("event_type_prefix", &filter.event_type_prefix)?;
        let event_type_regex = match part("event_type_regex", &filter.event_type_regex)? {
            Some(pattern) => Some(
                regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(MAX_FILTER_REGEX_BYTES)
                    .build()
                    .map_err(|e| BadFilter {
                        field: "event_type_regex",
                        why: e.to_string(),
                    })?,
            ),
            None => None,
        };
        let empty =
            stream_prefix.is_none() && event_type_prefix.is_none() && event_type_regex.is_none();
        Ok((!empty).then_some(EventFilter {
            stream_prefix,
            event_type_prefix,
            event_type_regex,
        }))
    }

    pub fn passes(&self, stream: &str, event_type: &str) -> bool {
        self.stream_prefix
            .as_deref()
            .is_none_or(|p| stream.starts_with(p))
            && self
                .event_type_prefix
                .as_deref()
                .is_none_or(|p| event_type.starts_with(p))
            && self
                .event_type_regex
                .as_ref()
                .is_none_or(|r| r.is_match(event_type))
    }

    /// Whether the filter asks for system streams by name (its stream prefix starts with `$`).
    pub fn asks_for_system_streams(&self) -> bool {
        self.stream_prefix
            .as_deref()
            .is_some_and(|p| p.starts_with('$'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(stream: &str, prefix: &str, regex: &str) -> SourceFilter {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        SourceFilter {
            stream_prefix: some(stream),
            event_type_prefix: some(prefix),
            event_type_regex: some(regex),
        }
    }

    #[test]
    fn an_event_passes_only_if_it_matches_every_part_given() {
        let f = EventFilter::compile(&filter("orders-", "Order", "Order(Placed|Paid)"))
            .expect("valid")
            .expect("not empty");
        assert!(f.passes("orders-1", "OrderPlaced"));
        assert!(!f.passes("orders-1", "OrderShipped"));
        assert!(!f.passes("users-1", "OrderPlaced"));
        assert!(!f.asks_for_system_streams());
        assert!(EventFilter::compile(&filter("", "", ""))
            .expect("valid")
            .is_none());
        let system = EventFilter::compile(&filter("$$", "", ""))
            .expect("valid")
            .expect("not empty");
        assert!(system.asks_for_system_streams());
    }

    #[test]
    fn bad_parts_are_refused_by_name() {
        let bad = EventFilter::compile(&filter("", "", "(")).expect_err("bad regex");
        assert_eq!(bad.field, "event_type_regex");
        let long = "x".repeat(MAX_FILTER_PART_BYTES + 1);
        let bad = EventFilter::compile(&filter(&long, "", "")).expect_err("too long");
        assert_eq!(bad.field, "stream_prefix");
    }
}

//! Kubernetes Events, published one way for every object the operator speaks
//! about (a MayastorPool, the policy ConfigMap): bounded texts, and a failed
//! publish is logged, never fatal.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Longest event reason (a policy's nonsense is cut here).
pub const MAX_EVENT_REASON: usize = 128;
/// Longest event note.
pub const MAX_NOTE: usize = 1024;

/// The recorder of this operator instance (`POD_NAME` tells replicas apart).
pub fn recorder(client: kube::Client) -> Recorder {
    Recorder::new(
        client,
        Reporter {
            controller: "msp-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    )
}

/// `text` cut to at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Publishes an event about `regarding`; a failure is logged.
pub async fn publish(
    recorder: &Recorder,
    regarding: &ObjectReference,
    warning: bool,
    reason: &str,
    note: &str,
    action: &str,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: truncate(reason, MAX_EVENT_REASON),
        note: Some(truncate(note, MAX_NOTE)),
        action: action.into(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, regarding).await {
        tracing::warn!(error = %err, %reason, "publishing an event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_on_char_boundaries() {
        let r = "é".repeat(1000);
        let cut = truncate(&r, MAX_NOTE);
        assert!(cut.len() <= MAX_NOTE && r.starts_with(&cut));
        assert_eq!(truncate("short", MAX_NOTE), "short");
    }
}

//! A durable consumer's message stream that ends when the consumer is gone.
//!
//! async-nats ends its pull stream when a pending pull is answered "Consumer
//! Deleted". A consumer deleted while no pull is pending (just created, or
//! between two pulls) is only ever reported as "no responders" and then as
//! missed heartbeats, forever: the service would go on looking healthy while
//! reading nothing. On those two errors this asks the server whether the
//! consumer (or its stream) still exists, and ends the stream when it is not
//! found twice, a second apart: the caller's `None => consumer closed` path
//! then stops the service. Any other answer (a timeout, no JetStream while a
//! cluster elects a leader) keeps the stream going: only "not found" is proof.

use std::{pin::Pin, time::Duration};

use async_nats::jetstream::{
    self,
    consumer::{
        pull::{self, MessagesError, MessagesErrorKind},
        Consumer,
    },
    context::ConsumerInfoErrorKind,
};
use futures::{Stream, StreamExt};

use crate::BusError;

/// Pause between the two lookups that must both find the consumer gone.
const RECHECK: Duration = Duration::from_secs(1);

/// Messages of one durable consumer; ends when the consumer or its stream is deleted.
pub type Messages = Pin<Box<dyn Stream<Item = Result<jetstream::Message, MessagesError>> + Send>>;

/// The consumer's messages, ending (`None`) once the consumer is known to be gone.
pub async fn messages(consumer: Consumer<pull::Config>) -> Result<Messages, BusError> {
    let name = consumer.cached_info().name.clone();
    let inner = consumer.messages().await.map_err(|e| BusError::js(format!("read consumer {name}"), e))?;
    let state = Watched { inner, consumer };
    Ok(futures::stream::unfold(state, |mut w| async move {
        let item = w.inner.next().await?;
        if let Err(e) = &item {
            if suspicious(e.kind()) && w.gone().await {
                let info = w.consumer.cached_info();
                let (consumer, stream) = (&info.name, &info.stream_name);
                tracing::warn!(consumer, stream, error = %e, "consumer deleted: its message stream ends");
                return None;
            }
        }
        Some((item, w))
    })
    // an unfold polled after its end panics; callers may poll again (a batch reader that saw the end)
    .fuse()
    .boxed())
}

/// The errors a consumer deleted between pulls shows up as.
fn suspicious(kind: MessagesErrorKind) -> bool {
    matches!(kind, MessagesErrorKind::NoResponders | MessagesErrorKind::MissingHeartbeat)
}

struct Watched {
    inner: pull::Stream,
    consumer: Consumer<pull::Config>,
}

impl Watched {
    /// True only when the server says twice, [`RECHECK`] apart, that the
    /// consumer or its stream does not exist (once could be a cluster that
    /// has not settled after a leader change).
    async fn gone(&self) -> bool {
        if !self.not_found().await {
            return false;
        }
        tokio::time::sleep(RECHECK).await;
        self.not_found().await
    }

    async fn not_found(&self) -> bool {
        match self.consumer.get_info().await {
            Ok(_) => false,
            Err(e) => matches!(e.kind(), ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_errors_of_a_silent_consumer_prompt_a_check() {
        assert!(suspicious(MessagesErrorKind::NoResponders));
        assert!(suspicious(MessagesErrorKind::MissingHeartbeat));
        // async-nats ends the stream itself on these, or they say nothing about existence
        for k in [MessagesErrorKind::ConsumerDeleted, MessagesErrorKind::Pull, MessagesErrorKind::Other] {
            assert!(!suspicious(k), "{k:?}");
        }
    }
}

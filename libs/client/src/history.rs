//! A task's history, read back from the streams: every lifecycle event
//! (`HWS_EVENTS`) and every attempt's result (`HWS_RESULTS`), also for tasks
//! the scheduler has long forgotten (as far back as the streams keep: 7 days).

use std::time::Duration;

use async_nats::jetstream::{
    consumer::{self, DeliverPolicy},
    stream::Stream as JsStream,
};
use futures::StreamExt;
use hwsched_bus::Stream;
use hwsched_proto::{
    v1::{ExecutionResult, TaskEvent},
    Message,
};

use crate::{Client, Error};

/// What the streams hold of one task.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Lifecycle events, oldest first.
    pub events: Vec<TaskEvent>,
    /// One entry per attempt that produced a result, oldest first.
    pub attempts: Vec<Attempt>,
}

/// One attempt's result.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The result as the executor reported it.
    pub result: ExecutionResult,
}

impl History {
    /// Nothing is stored for the task.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.attempts.is_empty()
    }
}

impl Client {
    /// An ordered consumer of every message on `subject` in `stream`, from the
    /// first stored on, with the stream (to delete it when done); `what` names
    /// the reading in errors ("read", "follow").
    pub(crate) async fn ordered_consumer(
        &self,
        stream: Stream,
        subject: &str,
        what: &str,
    ) -> Result<(JsStream, consumer::Consumer<consumer::pull::OrderedConfig>), Error> {
        let name = self.bus.subjects().stream(stream);
        let st = self
            .bus
            .jetstream()
            .get_stream(&name)
            .await
            .map_err(|e| Error::bus(&format!("stream {name} (has a scheduler ever run here?)"), e))?;
        let c = st
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject.to_owned(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::bus(&format!("{what} {subject}"), e))?;
        Ok((st, c))
    }

    /// Reads the events and results stored for `task_id`.
    pub async fn history(&self, task_id: &str) -> Result<History, Error> {
        let s = self.bus.subjects();
        let events: Vec<TaskEvent> = self.read_subject(Stream::Events, s.events(task_id)).await?;
        let results: Vec<ExecutionResult> = self.read_subject(Stream::Results, s.results_of(task_id)).await?;
        Ok(History { events, attempts: results.into_iter().map(|result| Attempt { result }).collect() })
    }

    /// Every message stored on `subject` in `stream`, decoded (undecodable ones skipped).
    async fn read_subject<M: Message + Default>(&self, stream: Stream, subject: String) -> Result<Vec<M>, Error> {
        let (st, c) = self.ordered_consumer(stream, &subject, "read").await?;
        let name = c.cached_info().name.clone();
        let mut pending = c.cached_info().num_pending;
        let mut out = Vec::new();
        if pending > 0 {
            let mut msgs = c.messages().await.map_err(|e| Error::bus(&format!("read {subject}"), e))?;
            while pending > 0 {
                let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), msgs.next()).await else { break };
                pending = m.info().map_or(0, |i| i.pending);
                if let Ok(v) = M::decode(m.payload.as_ref()) {
                    out.push(v);
                }
            }
        }
        // an ephemeral consumer per read: removed at once, not left to expire
        // (many reads in a row would otherwise hit the server's consumer limit)
        if let Err(e) = st.delete_consumer(&name).await {
            tracing::debug!(consumer = %name, error = %e, "history consumer not deleted; it expires on its own");
        }
        Ok(out)
    }
}

//! Asking the queue actor by message: what the runtime and the health
//! actor know of the queue comes from the actor that holds it.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::watch;

use super::actor::RetryMsg;
use super::entry::{Entry, QueueStats};
use crate::error::{Error, Result};
use crate::slot::{self, Slot};

/// Longest wait for the queue actor to answer a question.
pub const DEFAULT_ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Ask the queue actor running in `slot` for its counts, waiting (bounded)
/// while it restarts; `unavailable` when it is down or does not answer
/// within `timeout`.
pub async fn ask_stats(
    slot: &watch::Receiver<Slot<ActorRef<RetryMsg>>>,
    timeout: Duration,
) -> Result<QueueStats> {
    ask(slot, timeout, RetryMsg::Stats).await
}

/// Ask the queue actor running in `slot` for entry `id`, like
/// [`ask_stats`].
pub async fn ask_entry(
    slot: &watch::Receiver<Slot<ActorRef<RetryMsg>>>,
    id: i64,
    timeout: Duration,
) -> Result<Option<Entry>> {
    ask(slot, timeout, move |reply| RetryMsg::Entry(id, reply)).await
}

async fn ask<T: Send + 'static>(
    slot: &watch::Receiver<Slot<ActorRef<RetryMsg>>>,
    timeout: Duration,
    msg: impl FnOnce(RpcReplyPort<Result<T>>) -> RetryMsg,
) -> Result<T> {
    let queue = slot::running(&mut slot.clone())
        .await
        .map_err(|e| Error::unavailable(format!("the retry queue is not running: {}", e.detail)))?;
    match queue.call(msg, Some(timeout)).await {
        Ok(CallResult::Success(answer)) => answer,
        Ok(CallResult::Timeout) => Err(Error::unavailable(format!(
            "the retry queue did not answer within {} ms",
            timeout.as_millis()
        ))),
        Ok(CallResult::SenderError) | Err(_) => Err(Error::unavailable(
            "the retry queue stopped before answering (it is restarting or shut down)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use ractor::{Actor, ActorProcessingErr};

    use super::*;
    use crate::error::ErrorClass;

    /// A queue that takes messages and never answers them.
    struct Silent;

    impl Actor for Silent {
        type Msg = RetryMsg;
        type State = Vec<RetryMsg>;
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<RetryMsg>,
            _args: (),
        ) -> std::result::Result<Vec<RetryMsg>, ActorProcessingErr> {
            Ok(Vec::new())
        }

        async fn handle(
            &self,
            _myself: ActorRef<RetryMsg>,
            msg: RetryMsg,
            kept: &mut Vec<RetryMsg>,
        ) -> std::result::Result<(), ActorProcessingErr> {
            kept.push(msg);
            Ok(())
        }
    }

    #[tokio::test]
    async fn ask_is_unavailable_while_the_queue_is_down_silent_or_stopped() {
        let (_failed, slot) = watch::channel(Slot::Failed("past the restart limit".into()));
        let err = ask_stats(&slot, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Unavailable);
        assert!(
            err.detail.contains("not running") && err.detail.contains("restart limit"),
            "{err}"
        );

        let (queue, handle) = Actor::spawn(None, Silent, ()).await.unwrap();
        let (_running, slot) = watch::channel(Slot::Running(queue.clone()));
        let err = ask_entry(&slot, 1, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Unavailable);
        assert!(err.detail.contains("did not answer within 50 ms"), "{err}");

        queue.stop(None);
        handle.await.unwrap();
        let err = ask_stats(&slot, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Unavailable);
        assert!(err.detail.contains("stopped before answering"), "{err}");
    }
}

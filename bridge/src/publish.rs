//! Publishing with confirms: a batch's messages handed to lapin together, spread over the
//! session's channels by stream, then their confirms awaited.

use crate::render::Outgoing;
use crate::BridgeError;
use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;
use std::sync::atomic::{AtomicU64, Ordering};

/// Publishes every `(exchange, routing key, message, properties)` and waits for the broker to
/// confirm each; `pending` counts the confirms still awaited. Any nack or channel error fails
/// the whole batch (the caller publishes it again). Returns how many were confirmed.
///
/// Messages are spread over `channels` by their stream, so one stream's messages always
/// travel on one channel, in order, while the broker works on the channels in parallel
/// (each channel is one process inside RabbitMQ).
pub(crate) async fn publish_confirmed<'o>(
    channels: &[lapin::Channel],
    items: impl Iterator<Item = (&'o str, &'o str, &'o Outgoing, BasicProperties)>,
    pending: &AtomicU64,
) -> Result<u64, BridgeError> {
    let confirms = publish(channels, items, pending).await?;
    confirmed(confirms, pending).await
}

/// Publishes every `(exchange, routing key, message, properties)` (see `publish_confirmed`);
/// returns the confirms to await, counted in `pending`.
pub(crate) async fn publish<'o>(
    channels: &[lapin::Channel],
    items: impl Iterator<Item = (&'o str, &'o str, &'o Outgoing, BasicProperties)>,
    pending: &AtomicU64,
) -> Result<Vec<lapin::PublisherConfirm>, BridgeError> {
    let publishes = items.map(|(exchange, routing_key, o, props)| {
        channels[shard(&o.stream, channels.len())].basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            &o.message.body,
            props,
        )
    });
    let confirms = publish_in_order(publishes).await?;
    pending.fetch_add(confirms.len() as u64, Ordering::Relaxed);
    Ok(confirms)
}

/// Drives lapin `basic_publish` futures together and returns their confirms, in order.
///
/// Each publish hands its frames to the connection when first polled, then waits for the
/// connection's I/O thread to write them. Awaited one after the other, every message costs a
/// round trip between this task and that thread (two thread switches); here every future is
/// polled once, in the given order, so the frames queue in that order (one stream's messages
/// stay in order on their channel), and the I/O thread writes them in a few large writes while
/// this task waits once.
///
/// This relies on lapin queuing a publish's frames, and taking its confirm's delivery tag,
/// before the future's first wait (lapin 4's `basic_publish` does; the end-to-end test
/// `on_several_channels_each_tasks_messages_keep_their_order` checks the order on a real
/// broker). After the first round the futures are polled from the first unfinished one and
/// only while they are ready, since the I/O thread finishes them in order: an error behind an
/// unfinished publish is seen once that one finishes (lapin fails every publish of a broken
/// connection).
pub async fn publish_in_order<F, T, E>(publishes: impl Iterator<Item = F>) -> Result<Vec<T>, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    use std::task::Poll;
    let mut futures: Vec<_> = publishes.map(Box::pin).collect();
    let mut confirms: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    // the first future not finished yet; before the first round, every one is still unpolled
    let mut first = 0;
    let mut polled_all = false;
    std::future::poll_fn(|cx| {
        let mut i = first;
        while i < futures.len() {
            if confirms[i].is_none() {
                match futures[i].as_mut().poll(cx) {
                    Poll::Ready(Ok(confirm)) => confirms[i] = Some(confirm),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    // after the first round every pending future holds our waker: the frames
                    // are written in order, so the rest waits for this one
                    Poll::Pending if polled_all => break,
                    Poll::Pending => {}
                }
            }
            if confirms[i].is_some() && i == first {
                first += 1;
            }
            i += 1;
        }
        polled_all = true;
        if first == futures.len() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await?;
    Ok(confirms.into_iter().flatten().collect())
}

/// Awaits `confirms` (see `publish_confirmed`).
pub(crate) async fn confirmed(
    confirms: Vec<lapin::PublisherConfirm>,
    pending: &AtomicU64,
) -> Result<u64, BridgeError> {
    let mut confirmed = 0;
    for c in confirms {
        let answer = c.await;
        pending.fetch_sub(1, Ordering::Relaxed);
        let acked = match answer {
            Ok(conf) => conf.is_ack(),
            Err(e) => {
                pending.store(0, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        if !acked {
            pending.store(0, Ordering::Relaxed);
            return Err(BridgeError::Nacked);
        }
        confirmed += 1;
    }
    Ok(confirmed)
}

/// The channel (of `n`) that carries `stream`'s messages.
pub(crate) fn shard(stream: &str, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    if n <= 1 {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    stream.hash(&mut h);
    (h.finish() % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::publish_in_order;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::sync::oneshot;

    /// Which publishes were first polled, in order.
    type FirstPolls = Arc<Mutex<Vec<usize>>>;
    /// Each publish's result, sent when a test decides.
    type Results = Vec<oneshot::Sender<Result<usize, String>>>;

    /// Futures standing in for publishes: each notes its first poll (where lapin queues the
    /// frames), then waits for its own result.
    fn publishes(
        n: usize,
    ) -> (
        FirstPolls,
        Results,
        Vec<impl std::future::Future<Output = Result<usize, String>>>,
    ) {
        let first_polls = Arc::new(Mutex::new(Vec::new()));
        let (mut senders, mut futures) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (tx, rx) = oneshot::channel();
            senders.push(tx);
            let polls = first_polls.clone();
            futures.push(async move {
                polls.lock().unwrap().push(i);
                rx.await.unwrap_or_else(|_| Err("dropped".into()))
            });
        }
        (first_polls, senders, futures)
    }

    /// The spawned `publish_in_order`'s result; it must not wait forever.
    async fn finished<T>(all: tokio::task::JoinHandle<T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .expect("publish_in_order finished")
            .unwrap()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    /// Every future is first polled in the given order before any finishes; finishing out of
    /// order still returns the results in the given order, and nothing waits forever.
    #[test]
    fn first_polls_go_in_order_and_results_come_back_in_order() {
        runtime().block_on(async {
            let (first_polls, senders, futures) = publishes(5);
            let all = tokio::spawn(publish_in_order(futures.into_iter()));
            tokio::task::yield_now().await;
            assert_eq!(*first_polls.lock().unwrap(), vec![0, 1, 2, 3, 4]);
            let mut senders: Vec<_> = senders.into_iter().map(Some).collect();
            for i in [3, 1, 4, 0, 2] {
                senders[i].take().unwrap().send(Ok(i * 10)).unwrap();
                tokio::task::yield_now().await;
            }
            assert_eq!(finished(all).await, Ok(vec![0, 10, 20, 30, 40]));
            // each future was polled first exactly once per position
            assert_eq!(first_polls.lock().unwrap().len(), 5);
        });
    }

    /// An error fails the whole batch, once the publishes before it are through.
    #[test]
    fn an_error_fails_the_batch() {
        runtime().block_on(async {
            let (_, senders, futures) = publishes(3);
            let all = tokio::spawn(publish_in_order(futures.into_iter()));
            tokio::task::yield_now().await;
            let mut senders = senders.into_iter();
            let (a, b, c) = (
                senders.next().unwrap(),
                senders.next().unwrap(),
                senders.next().unwrap(),
            );
            c.send(Ok(2)).unwrap();
            b.send(Err("nacked".into())).unwrap();
            a.send(Ok(0)).unwrap();
            assert_eq!(finished(all).await, Err("nacked".to_string()));
            // and nothing to publish is nothing to wait for
            let none =
                publish_in_order(std::iter::empty::<std::future::Ready<Result<u8, String>>>());
            assert_eq!(none.await, Ok(vec![]));
        });
    }
}

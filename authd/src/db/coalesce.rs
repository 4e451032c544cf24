//! Lookups by key that arrive together share one query.
//!
//! On PostgreSQL each query is a round trip and a statement for the server
//! to run; under load, most of the cost of a refresh-token redemption was
//! that one `SELECT`. A [`Coalescer`] queues lookups and lets one worker
//! answer whatever is queued with a single query for all their keys (at
//! most [`MAX_BATCH`] distinct keys, at most [`IN_FLIGHT`] queries at once).
//!
//! Freshness is that of a query per lookup: a batch's query starts after
//! every lookup it answers was queued, so a row deleted (a token revoked)
//! before a lookup began is never seen by it. Nothing is cached.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::Error;

/// Distinct keys asked for in one query.
pub const MAX_BATCH: usize = 64;
/// Queries of one coalescer running at once.
pub const IN_FLIGHT: usize = 4;

type Reply<V> = oneshot::Sender<Result<Option<V>, Error>>;
/// What a query answers: the rows found among its keys, each with its key.
pub type Answer<K, V> = Pin<Box<dyn Future<Output = Result<Vec<(K, V)>, Error>> + Send>>;
/// The query of a batch of keys.
pub type Query<K, V> = Arc<dyn Fn(Vec<K>) -> Answer<K, V> + Send + Sync>;

/// See the module comment. Cloning shares the queue.
pub struct Coalescer<K, V> {
    queue: mpsc::UnboundedSender<(K, Reply<V>)>,
}

impl<K, V> Clone for Coalescer<K, V> {
    fn clone(&self) -> Self {
        Coalescer {
            queue: self.queue.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for Coalescer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Coalescer")
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Clone + Eq + Hash + Send + 'static,
    V: Clone + Send + 'static,
{
    /// Starts the worker on the current Tokio runtime; it ends when every
    /// clone is dropped.
    pub fn start(query: Query<K, V>) -> Coalescer<K, V> {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(work(rx, query));
        Coalescer { queue }
    }

    /// The value of `key`, or `None`, from a query that started after this
    /// call.
    pub async fn get(&self, key: K) -> Result<Option<V>, Error> {
        let (tx, rx) = oneshot::channel();
        let stopped = || Error::Unavailable("the database lookups stopped".into());
        self.queue.send((key, tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn work<K, V>(mut rx: mpsc::UnboundedReceiver<(K, Reply<V>)>, query: Query<K, V>)
where
    K: Clone + Eq + Hash + Send + 'static,
    V: Clone + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // A free slot first: what queues while all are busy joins this
        // batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut waiting: HashMap<K, Vec<Reply<V>>> = HashMap::new();
        waiting.entry(first.0).or_default().push(first.1);
        while waiting.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((k, reply)) => waiting.entry(k).or_default().push(reply),
                Err(_) => break,
            }
        }
        let query = query.clone();
        tokio::spawn(async move {
            let result = query(waiting.keys().cloned().collect()).await;
            drop(slot);
            answer(waiting, result);
        });
    }
}

/// Sends every waiting lookup its row, `None`, or the query's error.
fn answer<K: Eq + Hash, V: Clone>(
    mut waiting: HashMap<K, Vec<Reply<V>>>,
    result: Result<Vec<(K, V)>, Error>,
) {
    match result {
        Ok(rows) => {
            for (k, v) in rows {
                for reply in waiting.remove(&k).unwrap_or_default() {
                    let _ = reply.send(Ok(Some(v.clone())));
                }
            }
            for reply in waiting.into_values().flatten() {
                let _ = reply.send(Ok(None));
            }
        }
        Err(e) => {
            for reply in waiting.into_values().flatten() {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// A query over a fixed table that records the keys of every call and
    /// takes `delay`, or fails when asked for key 0.
    fn table(delay: Duration, calls: Arc<Mutex<Vec<Vec<u32>>>>) -> Query<u32, String> {
        Arc::new(move |keys: Vec<u32>| {
            let calls = calls.clone();
            Box::pin(async move {
                calls.lock().unwrap().push(keys.clone());
                tokio::time::sleep(delay).await;
                if keys.contains(&0) {
                    return Err(Error::Internal("key 0".into()));
                }
                Ok(keys
                    .into_iter()
                    .filter(|k| k % 2 == 1)
                    .map(|k| (k, format!("v{k}")))
                    .collect())
            })
        })
    }

    #[tokio::test]
    async fn lookups_queued_together_share_a_query_and_get_their_own_rows() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let c = Coalescer::start(table(Duration::from_millis(50), calls.clone()));
        // The first lookup occupies one slot; with every slot busy the next
        // ones pile up and go as batches.
        let lookups: Vec<_> = (1..=300u32)
            .map(|k| {
                let c = c.clone();
                tokio::spawn(async move { (k, c.get(k % 150 + 1).await) })
            })
            .collect();
        for l in lookups {
            let (k, got) = l.await.unwrap();
            let key = k % 150 + 1;
            let want = (key % 2 == 1).then(|| format!("v{key}"));
            assert_eq!(got.unwrap(), want, "key {key}");
        }
        let calls = calls.lock().unwrap();
        assert!(calls.len() < 300, "{} queries for 300 lookups", calls.len());
        for keys in calls.iter() {
            assert!(keys.len() <= MAX_BATCH);
            let mut distinct = keys.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), keys.len(), "a key once per query");
        }
    }

    #[tokio::test]
    async fn a_failed_query_fails_its_lookups_only() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let c = Coalescer::start(table(Duration::ZERO, calls));
        let e = c.get(0).await.unwrap_err();
        assert!(matches!(e, Error::Internal(ref m) if m == "key 0"), "{e:?}");
        assert_eq!(c.get(3).await.unwrap(), Some("v3".into()));
        assert_eq!(c.get(4).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_lookup_sees_what_was_committed_before_it_was_asked() {
        // The "table" is a shared set; the query reads it when it runs.
        let rows = Arc::new(Mutex::new(vec![7u32]));
        let table = rows.clone();
        let c: Coalescer<u32, u32> = Coalescer::start(Arc::new(move |keys: Vec<u32>| {
            let table = table.clone();
            Box::pin(async move {
                // Read when the query starts, answered later.
                let t = table.lock().unwrap().clone();
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(keys
                    .into_iter()
                    .filter(|k| t.contains(k))
                    .map(|k| (k, k))
                    .collect())
            })
        }));
        for _ in 0..20 {
            // Queries for the same key in flight, having read the row.
            let busy: Vec<_> = (0..8)
                .map(|_| {
                    let c = c.clone();
                    tokio::spawn(async move { c.get(7).await })
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(5)).await;
            rows.lock().unwrap().clear(); // "revoked"
            assert_eq!(
                c.get(7).await.unwrap(),
                None,
                "a revoked row is gone at once"
            );
            rows.lock().unwrap().push(7);
            for b in busy {
                b.await.unwrap().unwrap();
            }
        }
    }
}

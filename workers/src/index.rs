//! The route indexer: indexes a task under each of its `index.<path>` routes when a run of it
//! completes (upstream's index service listens on `task-completed` for the same).

use super::{resolution, writing, QueueCursor, IDLE};
use std::sync::Arc;
use taskledger_core::envelope::Actor;
use taskledger_core::index::{completion_fields, route_paths, Completion, IndexCommand};
use taskledger_core::log::{EventLog, Stored, QUEUE_TOPIC};
use taskledger_core::queue::{QueueEvent, ReasonResolved};
use taskledger_projections::engine::QUEUE_PARTITION;
use taskledger_projections::single::ServiceError;
use taskledger_projections::{Engine, IndexEngine};

/// The route indexer's checkpoint name (a position in the queue log).
pub const INDEXER_CONSUMER: &str = "index-routes";

/// Tails the queue log while this process writes the index partition; for every run that
/// completes, indexes its task under each valid `index.` route with the rank, data and expiry
/// of its `extra.index` (reference/index.md §2). A task whose `extra.index` has a field of the
/// wrong type is not indexed, as upstream.
///
/// It reads only as far as the queue projection has applied, so the task of a completion is
/// always there to read (unless it expired since, and then there is nothing to index). Its
/// checkpoint follows at most once a second; after a crash it reads again from the later of
/// the checkpoint and the last completion the index holds, and `decide` writes nothing for a
/// completion already indexed.
pub async fn run_indexing<L: EventLog + 'static>(engine: Engine, index: IndexEngine, log: Arc<L>) {
    let mut committed = engine.committed();
    let view = engine.view().clone();
    // None until read again (at the start, and whenever the role was lost)
    let mut cursor: Option<QueueCursor> = None;
    loop {
        if !writing(index.role()).await {
            cursor = None;
            continue;
        }
        let cursor = match &mut cursor {
            Some(c) => c,
            None => {
                let start = view
                    .consumer_offset(INDEXER_CONSUMER, QUEUE_TOPIC, QUEUE_PARTITION)
                    .and_then(|o| {
                        let indexed = index.view().last_completion()?;
                        Ok(o.max(indexed.map_or(0, |c| c + 1)))
                    });
                match start {
                    Ok(o) => cursor.insert(QueueCursor::new(&view, INDEXER_CONSUMER, o)),
                    Err(e) => {
                        tracing::error!(error = %e, "route indexer checkpoint unreadable");
                        tokio::time::sleep(IDLE).await;
                        continue;
                    }
                }
            }
        };
        let offset = cursor.at;
        let applied = engine.role().position();
        if applied <= offset {
            cursor.advance(offset);
            let _ = tokio::time::timeout(cursor.idle_wait(), committed.changed()).await;
            continue;
        }
        let max = (applied - offset).min(1024) as usize;
        let batch = match log.read(QUEUE_TOPIC, QUEUE_PARTITION, offset, max).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "route indexer cannot read the log");
                tokio::time::sleep(IDLE).await;
                continue;
            }
        };
        if batch.records.is_empty() {
            // only markers the log skips (the position moves past them), or a short read
            cursor.advance(batch.next);
            if cursor.at == offset {
                let _ = tokio::time::timeout(IDLE, committed.changed()).await;
            }
            continue;
        }
        // the batch's completions go to the index in one command (one append); if anything
        // fails that a retry may mend, the batch is read again from its start
        let completions: Result<Vec<Completion>, String> = batch
            .records
            .iter()
            .filter_map(|r| completion_at(&engine, r).transpose())
            .collect();
        let handled = match completions {
            Ok(c) if c.is_empty() => batch.next,
            Ok(c) => match index_all(&index, c).await {
                Ok(()) => batch.next,
                Err(e) => {
                    tracing::warn!(error = %e, "route indexing failed; will retry");
                    tokio::time::sleep(IDLE).await;
                    offset
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "route indexing cannot read a task; will retry");
                tokio::time::sleep(IDLE).await;
                offset
            }
        };
        cursor.advance(handled);
    }
}

/// Indexes `completions` in one command. A refusal no retry would change (an entry too large
/// for the log) sends them again one at a time, so only the one that causes it is passed over
/// rather than stall every later one; an unavailable log or a store fault is an error (the
/// batch is read again, and what was written of it is not written twice).
async fn index_all(index: &IndexEngine, completions: Vec<Completion>) -> Result<(), String> {
    let actor = || Actor::system("index-routes");
    let cmd = IndexCommand::IndexCompletions(completions.clone());
    match index.execute(actor(), cmd).await {
        Ok(_) => return Ok(()),
        Err(e @ (ServiceError::Unavailable(_) | ServiceError::Store(_))) => {
            return Err(e.to_string())
        }
        Err(e) => tracing::warn!(error = %e, "route indexing refused a batch; one at a time"),
    }
    for c in completions {
        let task_id = c.task_id;
        match index
            .execute(actor(), IndexCommand::IndexCompletions(vec![c]))
            .await
        {
            Ok(_) => {}
            Err(e @ (ServiceError::Unavailable(_) | ServiceError::Store(_))) => {
                return Err(e.to_string())
            }
            Err(e) => {
                tracing::error!(task_id = %task_id, error = %e, "route indexing refused; not indexed")
            }
        }
    }
    Ok(())
}

/// The completion at `record`, if it completes a run whose task has index routes.
fn completion_at(engine: &Engine, record: &Stored) -> Result<Option<Completion>, String> {
    let Some(env) = resolution(record) else {
        return Ok(None);
    };
    let QueueEvent::RunResolved {
        task_id,
        reason: ReasonResolved::Completed,
        ..
    } = env.payload
    else {
        return Ok(None);
    };
    let Some(task) = engine.view().task(&task_id).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let definition = &task.definition;
    let paths = route_paths(&definition.routes);
    if paths.is_empty() {
        return Ok(None);
    }
    let extra: serde_json::Value =
        serde_json::from_str(&definition.extra.0).unwrap_or(serde_json::Value::Null);
    let Some((rank, data, expires)) = completion_fields(&extra, definition.expires) else {
        tracing::info!(task_id = %task_id, "task.extra.index is malformed; not indexed");
        return Ok(None);
    };
    Ok(Some(Completion {
        offset: record.offset,
        task_id,
        paths,
        rank,
        data,
        expires,
    }))
}

//! The writer group: a Kafka consumer group whose assignments say which partitions this
//! process writes.

use super::*;

/// Turns the writer group's assignments into this process's partitions to write.
/// A member holding no partition while the group has fewer members than partitions was left
/// out of a rebalance (seen on noida-db after a member was removed: a survivor's rejoin got
/// lost and the other survivor kept everything). It leaves and joins again, which starts a
/// new round; returns whether it did.
pub(super) fn left_out(
    consumer: &BaseConsumer<GroupContext>,
    group: &str,
    partitions: usize,
) -> bool {
    let members = match consumer.fetch_group_list(Some(group), Duration::from_secs(5)) {
        Ok(list) => list
            .groups()
            .iter()
            .filter(|g| g.name() == group)
            .map(|g| g.members().len())
            .sum::<usize>(),
        Err(_) => return false,
    };
    if members >= partitions {
        // more members than partitions: holding nothing is this member's fair share
        return false;
    }
    let topics: Vec<String> = consumer
        .subscription()
        .map(|tpl| {
            let mut names: Vec<String> = tpl
                .elements()
                .iter()
                .map(|e| e.topic().to_string())
                .collect();
            names.sort();
            names.dedup();
            names
        })
        .unwrap_or_default();
    if topics.is_empty() {
        return false;
    }
    tracing::warn!(
        group,
        members,
        partitions,
        "this writer holds no partition while others hold several; joining the group again"
    );
    consumer.unsubscribe();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(e) = consumer.subscribe(&refs) {
        tracing::warn!(error = %e, "cannot join the writer group again");
    }
    true
}

pub(super) struct GroupContext {
    pub(super) inner: Weak<Inner>,
    /// Kafka topic name -> taskledger topic.
    pub(super) names: HashMap<String, String>,
}

impl GroupContext {
    pub(super) fn partitions(&self, tpl: &TopicPartitionList) -> Vec<(String, u32)> {
        tpl.elements()
            .iter()
            .filter_map(|e| {
                let topic = self.names.get(e.topic())?;
                Some((topic.clone(), u32::try_from(e.partition()).ok()?))
            })
            .collect()
    }
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (Rebalance::Revoke(tpl), Some(inner)) = (rebalance, self.inner.upgrade()) else {
            return;
        };
        for (topic, partition) in self.partitions(tpl) {
            if let Some(set) = inner.assigned.lock().expect("assigned lock").as_mut() {
                set.remove(&(topic.clone(), partition));
            }
            // no append of this process may start under the old ownership any more
            let slot = inner.writer_slot(&topic, partition);
            retire_writer(slot.lock().expect("writer slot").take());
            tracing::info!(
                topic,
                partition,
                node = inner.config.node,
                "the writer group revoked the partition"
            );
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (Rebalance::Assign(tpl), Some(inner)) = (rebalance, self.inner.upgrade()) else {
            return;
        };
        // the group's consumer only takes part in assignments; it never fetches
        if let Err(e) = consumer.pause(tpl) {
            tracing::warn!(error = %e, "cannot pause the writer group's partitions");
        }
        for (topic, partition) in self.partitions(tpl) {
            tracing::info!(
                topic,
                partition,
                node = inner.config.node,
                "the writer group assigned the partition"
            );
            if let Some(set) = inner.assigned.lock().expect("assigned lock").as_mut() {
                set.insert((topic, partition));
            }
        }
    }
}

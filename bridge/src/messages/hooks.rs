//! The hooks service's Pulse messages (reference/hooks.md §5): a hook created, updated or
//! deleted, `{hookGroupId, hookId}` with routing key `_`.

use serde_json::json;
use taskledger_core::hooks::HookEvent;

use super::{bytes, Message};

pub const HOOKS_EXCHANGE_PREFIX: &str = "exchange/taskcluster-hooks/v1/";
pub const HOOKS_EXCHANGES: &[&str] = &["hook-created", "hook-updated", "hook-deleted"];

/// The message for a hooks event: createHook (a repeated one too, as upstream publishes on
/// every call), updateHook and removeHook; fires and token resets publish nothing.
pub fn hook_message(event: &HookEvent) -> Option<Message> {
    let name = match event {
        HookEvent::HookCreated { .. } | HookEvent::HookCreateRepeated { .. } => "hook-created",
        HookEvent::HookUpdated { .. } => "hook-updated",
        HookEvent::HookRemoved { .. } => "hook-deleted",
        HookEvent::TriggerTokenReset { .. } | HookEvent::HookFired { .. } => return None,
    };
    let (group, id) = event.hook();
    Some(Message {
        exchange: format!("{HOOKS_EXCHANGE_PREFIX}{name}"),
        routing_key: "_".into(),
        cc: vec![],
        body: bytes(&json!({ "hookGroupId": group, "hookId": id })),
    })
}

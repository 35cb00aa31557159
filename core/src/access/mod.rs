//! The auth service's domain: clients and roles as event-sourced aggregates (reference/auth.md
//! §7–9), their rules and folds (`decide`: `AuthState::decide`/`apply`), role expansion
//! (`roles`) and the sealing of access tokens (`seal`).
//!
//! **Invariant:** an access token never enters an event in clear: events carry a `Sealed`
//! token (AES-256-GCM), made by the caller, which owns the key and the randomness.

mod decide;
pub mod roles;
pub mod seal;

use crate::scopes;
use crate::time::Millis;
use roles::{RoleError, RoleSet};
use seal::Sealed;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Topic of the auth service's events.
pub const AUTH_TOPIC: &str = "taskledger.auth";

/// Client ids reserved for configuration (auth.md §8).
pub const STATIC_PREFIX: &str = "static/";

/// Auth events. Wire format V1: variants are only ever appended.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum AuthEvent {
    ClientCreated {
        client_id: String,
        description: String,
        expires: Millis,
        scopes: Vec<String>,
        delete_on_expiration: bool,
        token: Sealed,
    },
    ClientUpdated {
        client_id: String,
        description: String,
        expires: Millis,
        scopes: Vec<String>,
        delete_on_expiration: bool,
    },
    AccessTokenReset {
        client_id: String,
        token: Sealed,
    },
    ClientEnabled {
        client_id: String,
    },
    ClientDisabled {
        client_id: String,
    },
    ClientDeleted {
        client_id: String,
        /// Deleted by the expiry reactor rather than by a call.
        expired: bool,
    },
    RoleCreated {
        role_id: String,
        description: String,
        scopes: Vec<String>,
    },
    RoleUpdated {
        role_id: String,
        description: String,
        scopes: Vec<String>,
    },
    RoleDeleted {
        role_id: String,
    },
    /// A request authenticated with the client's key, at least `USED_REFRESH_MS` after the last
    /// recorded use (auth.md §4.2: `lastDateUsed` is refreshed when older than 6 hours). Kept
    /// in its own stream (`client-usage/<id>`), so the client's stream and its Pulse messages
    /// hold only changes.
    ClientUsed {
        client_id: String,
    },
    /// A call repeated to the same effect: enabling an enabled client, disabling a disabled
    /// one, deleting an absent client or role, creating a role exactly as it is. Nothing
    /// changes (and no audit action is recorded), but the call's Pulse message goes out again,
    /// as upstream publishes on every such call (pulse.md §6).
    Repeated {
        repeat: AuthRepeat,
    },
}

/// What a repeated auth call would have done (`AuthEvent::Repeated`). Wire format V1:
/// variants are only ever appended.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum AuthRepeat {
    ClientEnabled { client_id: String },
    ClientDisabled { client_id: String },
    ClientDeleted { client_id: String },
    RoleCreated { role_id: String },
    RoleDeleted { role_id: String },
}

/// How stale `lastDateUsed` may get before a request refreshes it.
pub const USED_REFRESH_MS: i64 = 6 * crate::time::HOUR;

/// The stream of a client's recorded uses.
fn usage_stream(client_id: &str) -> String {
    format!("client-usage/{client_id}")
}

/// The entity an auth event is about.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EntityType {
    Client,
    Role,
}

impl EntityType {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Client => "client",
            EntityType::Role => "role",
        }
    }
}

impl AuthEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            AuthEvent::ClientCreated { .. } => "ClientCreated",
            AuthEvent::ClientUpdated { .. } => "ClientUpdated",
            AuthEvent::AccessTokenReset { .. } => "AccessTokenReset",
            AuthEvent::ClientEnabled { .. } => "ClientEnabled",
            AuthEvent::ClientDisabled { .. } => "ClientDisabled",
            AuthEvent::ClientDeleted { .. } => "ClientDeleted",
            AuthEvent::RoleCreated { .. } => "RoleCreated",
            AuthEvent::RoleUpdated { .. } => "RoleUpdated",
            AuthEvent::RoleDeleted { .. } => "RoleDeleted",
            AuthEvent::ClientUsed { .. } => "ClientUsed",
            AuthEvent::Repeated { .. } => "Repeated",
        }
    }

    /// The entity and its id.
    pub fn entity(&self) -> (EntityType, &str) {
        match self {
            AuthEvent::ClientCreated { client_id, .. }
            | AuthEvent::ClientUpdated { client_id, .. }
            | AuthEvent::AccessTokenReset { client_id, .. }
            | AuthEvent::ClientEnabled { client_id }
            | AuthEvent::ClientDisabled { client_id }
            | AuthEvent::ClientDeleted { client_id, .. }
            | AuthEvent::ClientUsed { client_id } => (EntityType::Client, client_id),
            AuthEvent::RoleCreated { role_id, .. }
            | AuthEvent::RoleUpdated { role_id, .. }
            | AuthEvent::RoleDeleted { role_id } => (EntityType::Role, role_id),
            AuthEvent::Repeated { repeat } => match repeat {
                AuthRepeat::ClientEnabled { client_id }
                | AuthRepeat::ClientDisabled { client_id }
                | AuthRepeat::ClientDeleted { client_id } => (EntityType::Client, client_id),
                AuthRepeat::RoleCreated { role_id } | AuthRepeat::RoleDeleted { role_id } => {
                    (EntityType::Role, role_id)
                }
            },
        }
    }

    /// The stream (aggregate) the event belongs to.
    pub fn stream_id(&self) -> String {
        if let AuthEvent::ClientUsed { client_id } = self {
            return usage_stream(client_id);
        }
        let (kind, id) = self.entity();
        format!("{}/{id}", kind.as_str())
    }

    /// Whether the event is an action in the audit history (a client's use and a repeated
    /// call are not).
    pub fn is_audited(&self) -> bool {
        !matches!(
            self,
            AuthEvent::ClientUsed { .. } | AuthEvent::Repeated { .. }
        )
    }

    /// Whether the event may change its entity's stored state (a repeated call does not).
    pub fn changes_state(&self) -> bool {
        !matches!(self, AuthEvent::Repeated { .. })
    }

    /// Taskcluster's audit `actionType` (auth.md §9).
    pub fn action_type(&self) -> &'static str {
        match self {
            AuthEvent::ClientCreated { .. } | AuthEvent::RoleCreated { .. } => "created",
            AuthEvent::ClientUpdated { .. } | AuthEvent::RoleUpdated { .. } => "updated",
            AuthEvent::AccessTokenReset { .. } => "access token reset",
            AuthEvent::ClientEnabled { .. } => "client enabled",
            AuthEvent::ClientDisabled { .. } => "client disabled",
            AuthEvent::ClientDeleted { expired: true, .. } => "expired",
            AuthEvent::ClientDeleted { expired: false, .. } | AuthEvent::RoleDeleted { .. } => {
                "deleted"
            }
            AuthEvent::ClientUsed { .. } => "used",
            AuthEvent::Repeated { .. } => "repeated",
        }
    }
}

/// A client as the projection holds it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Client {
    pub client_id: String,
    pub description: String,
    pub expires: Millis,
    /// As given at creation or update (their order kept), unexpanded.
    pub scopes: Vec<String>,
    pub delete_on_expiration: bool,
    pub disabled: bool,
    pub created: Millis,
    pub last_modified: Millis,
    pub last_rotated: Millis,
    pub last_date_used: Millis,
    pub token: Sealed,
}

/// A role as the projection holds it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Role {
    pub role_id: String,
    pub description: String,
    /// Sorted.
    pub scopes: Vec<String>,
    pub created: Millis,
    pub last_modified: Millis,
}

/// Everything the auth service decides against.
#[derive(Clone, Debug, Default)]
pub struct AuthState {
    pub clients: BTreeMap<String, Client>,
    pub roles: BTreeMap<String, Role>,
    /// The roles as an expansion-ready snapshot, rebuilt on every role change.
    pub role_set: RoleSet,
}

/// Commands. Token material arrives sealed; the gateway has already checked the caller's
/// scopes, static ids and input shapes.
#[derive(Clone, Debug, PartialEq)]
pub enum AuthCommand {
    CreateClient {
        client_id: String,
        description: String,
        expires: Millis,
        scopes: Vec<String>,
        delete_on_expiration: bool,
        token: Sealed,
    },
    UpdateClient {
        client_id: String,
        description: String,
        expires: Millis,
        scopes: Option<Vec<String>>,
        delete_on_expiration: Option<bool>,
    },
    ResetAccessToken {
        client_id: String,
        token: Sealed,
    },
    EnableClient {
        client_id: String,
    },
    DisableClient {
        client_id: String,
    },
    DeleteClient {
        client_id: String,
    },
    /// The expiry reactor: delete a client whose `expires` passed, if it asked for that.
    ExpireClient {
        client_id: String,
    },
    /// The gateway: the client's key just authenticated a request.
    MarkClientUsed {
        client_id: String,
    },
    CreateRole {
        role_id: String,
        description: String,
        scopes: Vec<String>,
    },
    UpdateRole {
        role_id: String,
        description: String,
        scopes: Vec<String>,
    },
    DeleteRole {
        role_id: String,
    },
}

impl AuthCommand {
    /// The stream the command acts on.
    pub fn stream_id(&self) -> String {
        match self {
            AuthCommand::CreateClient { client_id, .. }
            | AuthCommand::UpdateClient { client_id, .. }
            | AuthCommand::ResetAccessToken { client_id, .. }
            | AuthCommand::EnableClient { client_id }
            | AuthCommand::DisableClient { client_id }
            | AuthCommand::DeleteClient { client_id }
            | AuthCommand::ExpireClient { client_id } => format!("client/{client_id}"),
            AuthCommand::MarkClientUsed { client_id } => usage_stream(client_id),
            AuthCommand::CreateRole { role_id, .. }
            | AuthCommand::UpdateRole { role_id, .. }
            | AuthCommand::DeleteRole { role_id } => format!("role/{role_id}"),
        }
    }
}

/// Why a command is refused; the gateway maps each to Taskcluster's error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Client `{0}` not found")]
    ClientNotFound(String),
    #[error("Client with clientId `{0}` already exists")]
    ClientExists(String),
    #[error("Role `{0}` not found")]
    RoleNotFound(String),
    #[error("Role with roleId `{0}` already exists")]
    RoleExists(String),
    #[error("{0}")]
    InvalidRole(#[from] RoleError),
    #[error("{0}")]
    Input(String),
}

#[cfg(test)]
mod tests;

//! The auth rules and folds: `AuthState::decide` turns a command into events or a refusal,
//! `AuthState::apply` moves the state and holds no rules.

use super::*;

/// The one event of a call repeated to the same effect.
fn repeated(repeat: AuthRepeat) -> Vec<AuthEvent> {
    vec![AuthEvent::Repeated { repeat }]
}

/// A role's scopes as stored: in canonical order (`scopeCompare`), without repeats.
fn sorted(mut s: Vec<String>) -> Vec<String> {
    s.sort_by(|a, b| scopes::scope_compare(a, b));
    s.dedup();
    s
}

/// A client's scopes as stored: as given (upstream keeps their order), without repeats.
fn as_given(s: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::with_capacity(s.len());
    s.into_iter().filter(|x| seen.insert(x.clone())).collect()
}

fn check_client_scopes(scopes_: &[String]) -> Result<(), AuthError> {
    for s in scopes_ {
        if !scopes::is_valid_scope(s) {
            return Err(AuthError::Input(format!(
                "scope `{s}` is not a valid scope"
            )));
        }
        if s.ends_with("**") {
            return Err(AuthError::Input("scopes must not end with `**`".into()));
        }
    }
    Ok(())
}

impl AuthState {
    /// The pure decision: events for `cmd`, or why not. An empty list means "already so".
    pub fn decide(&self, cmd: &AuthCommand, now: Millis) -> Result<Vec<AuthEvent>, AuthError> {
        let client = |id: &str| {
            self.clients
                .get(id)
                .ok_or_else(|| AuthError::ClientNotFound(id.to_string()))
        };
        Ok(match cmd.clone() {
            AuthCommand::CreateClient {
                client_id,
                description,
                expires,
                scopes,
                delete_on_expiration,
                token,
            } => {
                check_client_scopes(&scopes)?;
                if self.clients.contains_key(&client_id) {
                    return Err(AuthError::ClientExists(client_id));
                }
                vec![AuthEvent::ClientCreated {
                    client_id,
                    description,
                    expires,
                    scopes: as_given(scopes),
                    delete_on_expiration,
                    token,
                }]
            }
            AuthCommand::UpdateClient {
                client_id,
                description,
                expires,
                scopes,
                delete_on_expiration,
            } => {
                let c = client(&client_id)?;
                if let Some(s) = &scopes {
                    check_client_scopes(s)?;
                }
                vec![AuthEvent::ClientUpdated {
                    scopes: scopes.map(as_given).unwrap_or_else(|| c.scopes.clone()),
                    delete_on_expiration: delete_on_expiration.unwrap_or(c.delete_on_expiration),
                    client_id,
                    description,
                    expires,
                }]
            }
            AuthCommand::ResetAccessToken { client_id, token } => {
                client(&client_id)?;
                vec![AuthEvent::AccessTokenReset { client_id, token }]
            }
            AuthCommand::EnableClient { client_id } => {
                if client(&client_id)?.disabled {
                    vec![AuthEvent::ClientEnabled { client_id }]
                } else {
                    repeated(AuthRepeat::ClientEnabled { client_id })
                }
            }
            AuthCommand::DisableClient { client_id } => {
                if client(&client_id)?.disabled {
                    repeated(AuthRepeat::ClientDisabled { client_id })
                } else {
                    vec![AuthEvent::ClientDisabled { client_id }]
                }
            }
            AuthCommand::DeleteClient { client_id } => match self.clients.get(&client_id) {
                Some(_) => vec![AuthEvent::ClientDeleted {
                    client_id,
                    expired: false,
                }],
                None => repeated(AuthRepeat::ClientDeleted { client_id }),
            },
            AuthCommand::ExpireClient { client_id } => match self.clients.get(&client_id) {
                Some(c) if c.delete_on_expiration && c.expires < now => {
                    vec![AuthEvent::ClientDeleted {
                        client_id,
                        expired: true,
                    }]
                }
                _ => vec![],
            },
            AuthCommand::MarkClientUsed { client_id } => match self.clients.get(&client_id) {
                Some(c) if now.0 - c.last_date_used.0 >= USED_REFRESH_MS => {
                    vec![AuthEvent::ClientUsed { client_id }]
                }
                _ => vec![],
            },
            AuthCommand::CreateRole {
                role_id,
                description,
                scopes,
            } => {
                let scopes = sorted(scopes);
                if let Some(existing) = self.roles.get(&role_id) {
                    // a role stored before canonical order was kept in byte order
                    if existing.description == description
                        && sorted(existing.scopes.clone()) == scopes
                    {
                        return Ok(repeated(AuthRepeat::RoleCreated { role_id }));
                    }
                    return Err(AuthError::RoleExists(role_id));
                }
                self.role_set.with_role(&role_id, scopes.clone())?;
                vec![AuthEvent::RoleCreated {
                    role_id,
                    description,
                    scopes,
                }]
            }
            AuthCommand::UpdateRole {
                role_id,
                description,
                scopes,
            } => {
                if !self.roles.contains_key(&role_id) {
                    return Err(AuthError::RoleNotFound(role_id));
                }
                // as given: upstream sorts a role's scopes on creation only
                let scopes = as_given(scopes);
                self.role_set.with_role(&role_id, scopes.clone())?;
                vec![AuthEvent::RoleUpdated {
                    role_id,
                    description,
                    scopes,
                }]
            }
            AuthCommand::DeleteRole { role_id } => match self.roles.get(&role_id) {
                Some(_) => vec![AuthEvent::RoleDeleted { role_id }],
                None => repeated(AuthRepeat::RoleDeleted { role_id }),
            },
        })
    }

    /// Moves state; no rules. `at` is the event's time.
    pub fn apply(&mut self, event: &AuthEvent, at: Millis) {
        match event.clone() {
            AuthEvent::ClientCreated {
                client_id,
                description,
                expires,
                scopes,
                delete_on_expiration,
                token,
            } => {
                self.clients.insert(
                    client_id.clone(),
                    Client {
                        client_id,
                        description,
                        expires,
                        scopes,
                        delete_on_expiration,
                        disabled: false,
                        created: at,
                        last_modified: at,
                        last_rotated: at,
                        last_date_used: at,
                        token,
                    },
                );
            }
            AuthEvent::ClientUpdated {
                client_id,
                description,
                expires,
                scopes,
                delete_on_expiration,
            } => {
                if let Some(c) = self.clients.get_mut(&client_id) {
                    c.description = description;
                    c.expires = expires;
                    c.scopes = scopes;
                    c.delete_on_expiration = delete_on_expiration;
                    c.last_modified = at;
                }
            }
            AuthEvent::AccessTokenReset { client_id, token } => {
                if let Some(c) = self.clients.get_mut(&client_id) {
                    c.token = token;
                    c.last_rotated = at;
                    c.last_modified = at;
                }
            }
            AuthEvent::ClientEnabled { client_id } => {
                if let Some(c) = self.clients.get_mut(&client_id) {
                    c.disabled = false;
                    c.last_modified = at;
                }
            }
            AuthEvent::ClientDisabled { client_id } => {
                if let Some(c) = self.clients.get_mut(&client_id) {
                    c.disabled = true;
                    c.last_modified = at;
                }
            }
            AuthEvent::ClientUsed { client_id } => {
                if let Some(c) = self.clients.get_mut(&client_id) {
                    c.last_date_used = at;
                }
            }
            AuthEvent::ClientDeleted { client_id, .. } => {
                self.clients.remove(&client_id);
            }
            AuthEvent::RoleCreated {
                role_id,
                description,
                scopes,
            } => {
                self.roles.insert(
                    role_id.clone(),
                    Role {
                        role_id,
                        description,
                        scopes,
                        created: at,
                        last_modified: at,
                    },
                );
                self.rebuild_roles();
            }
            AuthEvent::RoleUpdated {
                role_id,
                description,
                scopes,
            } => {
                if let Some(r) = self.roles.get_mut(&role_id) {
                    r.description = description;
                    r.scopes = scopes;
                    r.last_modified = at;
                }
                self.rebuild_roles();
            }
            AuthEvent::RoleDeleted { role_id } => {
                self.roles.remove(&role_id);
                self.rebuild_roles();
            }
            AuthEvent::Repeated { .. } => {}
        }
    }

    /// Rebuilds the expansion snapshot from the roles.
    pub fn rebuild_roles(&mut self) {
        self.role_set = RoleSet::new(
            self.roles
                .values()
                .map(|r| (r.role_id.clone(), r.scopes.clone())),
        );
    }
}

//! The permanent clients a node authenticates: static clients from configuration, then the
//! auth projection's, their access tokens opened with the node's seal key.

use std::collections::HashMap;
use std::sync::Arc;
use taskledger_core::access::seal::SealKey;
use taskledger_core::auth::{ClientRecord, ClientSource};
use taskledger_core::scopes::ScopeSet;
use taskledger_projections::AuthView;

/// The permanent clients this node knows: static clients from configuration, then the auth
/// projection's clients, with scopes expanded through the projection's roles.
pub struct Clients {
    statics: HashMap<String, ClientRecord>,
    /// Static clients' descriptions as configured (none: upstream's default).
    descriptions: HashMap<String, String>,
    view: Option<Arc<AuthView>>,
    key: SealKey,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            statics: HashMap::new(),
            descriptions: HashMap::new(),
            view: None,
            key: SealKey::new([0; 32]),
        }
    }
}

impl Clients {
    /// Clients backed by the auth projection; tokens are opened with `key`.
    pub fn new(view: Arc<AuthView>, key: SealKey) -> Clients {
        Clients {
            statics: HashMap::new(),
            descriptions: HashMap::new(),
            view: Some(view),
            key,
        }
    }

    /// Adds a static client (scopes unexpanded, as configured).
    pub fn insert(&mut self, client: ClientRecord) {
        self.statics.insert(client.client_id.clone(), client);
    }

    /// A static client with the description its configuration gives.
    pub fn insert_described(&mut self, client: ClientRecord, description: String) {
        self.descriptions
            .insert(client.client_id.clone(), description);
        self.insert(client);
    }

    /// A static client's configured description, if it has one.
    pub fn static_description(&self, id: &str) -> Option<&str> {
        self.descriptions.get(id).map(String::as_str)
    }

    /// The static clients, by id.
    pub fn statics(&self) -> impl Iterator<Item = &ClientRecord> {
        self.statics.values()
    }

    pub fn static_client(&self, id: &str) -> Option<&ClientRecord> {
        self.statics.get(id)
    }

    pub fn seal_key(&self) -> &SealKey {
        &self.key
    }

    /// The scopes of an anonymous request: `assume:anonymous` expanded.
    pub fn anonymous_scopes(&self) -> ScopeSet {
        self.expand(vec!["assume:anonymous".to_string()])
    }
}

impl ClientSource for Clients {
    fn client(&self, client_id: &str) -> Option<ClientRecord> {
        if let Some(c) = self.statics.get(client_id) {
            let mut c = c.clone();
            c.scopes = match &self.view {
                Some(view) => view.final_scopes(&c.scopes),
                None => {
                    let mut held = c.scopes.to_vec();
                    held.push("assume:anonymous".to_string());
                    self.expand(held)
                }
            };
            c.final_scopes = true;
            return Some(c);
        }
        let view = self.view.as_ref()?;
        let (token, expires, disabled, scopes) = view.client_for_auth(client_id)?;
        let access_token = self.key.open(client_id, &token)?;
        Some(ClientRecord {
            client_id: client_id.to_string(),
            access_token,
            scopes,
            final_scopes: true,
            expires: expires.to_datetime(),
            disabled,
        })
    }

    fn issuer(&self, client_id: &str) -> Option<ClientRecord> {
        if let Some(c) = self.statics.get(client_id) {
            let mut c = c.clone();
            c.scopes = self.expand(c.scopes.to_vec());
            c.final_scopes = false;
            return Some(c);
        }
        let view = self.view.as_ref()?;
        let client = view.client(client_id)?;
        let access_token = self.key.open(client_id, &client.token)?;
        Some(ClientRecord {
            client_id: client_id.to_string(),
            access_token,
            scopes: view.expand(client.scopes),
            final_scopes: false,
            expires: client.expires.to_datetime(),
            disabled: client.disabled,
        })
    }

    fn expand(&self, scopes: Vec<String>) -> ScopeSet {
        match &self.view {
            Some(view) => view.expand(scopes),
            None => ScopeSet::new(taskledger_core::scopes::normalize(scopes)),
        }
    }
}

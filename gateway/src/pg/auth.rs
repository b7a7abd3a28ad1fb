//! Startup and authentication of wire connections.
//!
//! With users defined (`tally users add`), a connection authenticates with
//! SCRAM-SHA-256 against the user's stored verifier (pgwire's SASL handler;
//! cleartext and MD5 are never offered). Without any user, the gateway is
//! in development mode: connections are trusted and see every site (logged
//! at startup). `--auth scram` requires users even when none exist, `--auth
//! trust` never asks. After authentication the connection gets its tenant
//! scope: all sites for an admin, the granted ones otherwise.
//!
//! Failed logins are logged (user and address, never the password) and
//! counted per source address: past `MAX_FAILURES` in `FAILURE_WINDOW` the
//! address is refused before authentication (SQLSTATE 28000) until the
//! window passes.

use super::ServerParams;
use crate::error::{fatal_error, user_error};
use crate::tenant::TenantScope;
use crate::users::{UserStore, parse_verifier};
use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, ScramSecret};
use pgwire::api::auth::{
    AuthSource, LoginInfo, Password, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, ConnectionManager, PgWireConnectionState, PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::PasswordMessageFamily;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use std::collections::HashMap;
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed logins one address may have within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The window failed logins are counted over.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// How connections authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// SCRAM when any user exists, otherwise trust (development).
    Auto,
    /// Always SCRAM-SHA-256.
    Scram,
    /// Never authenticate: every connection sees every site.
    Trust,
}

/// The stored verifier of a login's user.
#[derive(Debug)]
struct VerifierSource {
    users: UserStore,
}

#[async_trait]
impl AuthSource for VerifierSource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        // Only verifiers are stored; there is no password to give.
        Err(PgWireError::InvalidPassword(
            login.user().unwrap_or_default().to_owned(),
        ))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        let user = login.user().unwrap_or_default();
        let record = self
            .users
            .get(user)
            .await
            .map_err(|e| user_error("58000", format!("cannot read users: {e}")))?;
        // An unknown user fails exactly like a wrong password.
        let secret = record
            .and_then(|r| parse_verifier(&r.verifier))
            .ok_or_else(|| PgWireError::InvalidPassword(user.to_owned()))?;
        Ok((secret, None))
    }
}

/// Whether a connection is using SCRAM (kept in its session extensions).
struct UsesScram;

/// An admitted connection's place in the count, given back when the
/// connection (and so its session extensions) goes away.
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Failed logins per source address.
#[derive(Default)]
struct FailedLogins {
    by_addr: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailedLogins {
    fn blocked(&self, addr: IpAddr) -> bool {
        let Ok(map) = self.by_addr.lock() else { return false };
        map.get(&addr)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    fn record(&self, addr: IpAddr) {
        let Ok(mut map) = self.by_addr.lock() else { return };
        if map.len() > 100_000 {
            map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let entry = map.entry(addr).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

/// The startup handler: trust or SCRAM per [`AuthMode`], then the scope.
pub struct Authenticator {
    mode: AuthMode,
    users: UserStore,
    sasl: SASLAuthStartupHandler<ServerParams>,
    pids: Arc<RandomPidSecretKeyGenerator>,
    cancels: Arc<ConnectionManager>,
    failures: FailedLogins,
    /// Refuse connections without TLS.
    tls_required: bool,
    /// Admitted connections and the most allowed.
    admitted: Arc<AtomicUsize>,
    max_connections: usize,
}

impl Authenticator {
    pub fn new(
        mode: AuthMode,
        users: UserStore,
        cancels: Arc<ConnectionManager>,
        tls_required: bool,
        max_connections: usize,
    ) -> Self {
        let pids = Arc::new(RandomPidSecretKeyGenerator::default());
        let scram = ScramAuth::new(Arc::new(VerifierSource { users: users.clone() }));
        let sasl = SASLAuthStartupHandler::new(Arc::new(ServerParams))
            .with_scram(scram)
            .with_pid_secret_key_generator(pids.clone())
            .with_connection_manager(cancels.clone());
        Authenticator {
            mode,
            users,
            sasl,
            pids,
            cancels,
            failures: FailedLogins::default(),
            tls_required,
            admitted: Arc::new(AtomicUsize::new(0)),
            max_connections,
        }
    }

    async fn wants_scram(&self) -> PgWireResult<bool> {
        Ok(match self.mode {
            AuthMode::Trust => false,
            AuthMode::Scram => true,
            // Fail closed: if the registry cannot be read, nobody gets in.
            AuthMode::Auto => self
                .users
                .any()
                .await
                .map_err(|e| user_error("58000", format!("cannot read users: {e}")))?,
        })
    }

    /// The scope of an authenticated user.
    async fn scope_of(&self, user: &str) -> PgWireResult<TenantScope> {
        match self.users.get(user).await {
            Ok(Some(record)) => Ok(record.scope()),
            Ok(None) => Ok(TenantScope::none()),
            Err(e) => Err(user_error("58000", format!("cannot read users: {e}"))),
        }
    }
}

/// Session marker: the client's first SASL message has been checked.
struct SaslStarted;

/// Whether `body` is a well-formed SASLInitialResponse: a mechanism name
/// (C string), then an Int32 length and that many bytes, or -1 and none.
pub fn is_sasl_initial_response(body: &[u8]) -> bool {
    let Some(nul) = body.iter().position(|b| *b == 0) else {
        return false;
    };
    let rest = &body[nul + 1..];
    let Some(len) = rest
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(i32::from_be_bytes)
    else {
        return false;
    };
    len == -1 || usize::try_from(len).is_ok_and(|n| n == rest.len() - 4)
}

#[async_trait]
impl StartupHandler for Authenticator {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let peer = client.socket_addr();
        if let PgWireFrontendMessage::Startup(ref startup) = message {
            // A connection holds its place from startup until it closes
            // (the guard lives in its session extensions).
            if self.admitted.fetch_add(1, Ordering::SeqCst) >= self.max_connections {
                self.admitted.fetch_sub(1, Ordering::SeqCst);
                metrics::counter!("tally_gateway_connections_refused_total").increment(1);
                return Err(fatal_error("53300", "sorry, too many clients already"));
            }
            client.session_extensions().insert(Admitted(self.admitted.clone()));
            if self.tls_required && !client.is_secure() {
                return Err(fatal_error(
                    "28000",
                    "this server requires TLS: connect with sslmode=require",
                ));
            }
            if self.failures.blocked(peer.ip()) {
                tracing::warn!(%peer, "login refused: too many failed logins from this address");
                return Err(fatal_error(
                    "28000",
                    "too many failed login attempts from this address; try again later",
                ));
            }
            if !self.wants_scram().await? {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let (pid, key) = self.pids.generate(&*client);
                let (handle, guard) = self.cancels.register(pid, key.clone());
                client.session_extensions().insert(handle);
                client.session_extensions().insert(guard);
                client.set_pid_and_secret_key(pid, key);
                client.session_extensions().insert(TenantScope::all());
                return finish_authentication(client, &ServerParams).await;
            }
            client.session_extensions().insert(UsesScram);
        }
        if client.session_extensions().get::<UsesScram>().is_none() {
            return Ok(());
        }
        let user = client.metadata().get("user").cloned().unwrap_or_default();
        // pgwire 0.42 decodes the client's first SASL message without bounds
        // checks (a short one panics the connection task); check its shape
        // first so the client gets a protocol-violation error instead.
        if let PgWireFrontendMessage::PasswordMessageFamily(PasswordMessageFamily::Raw(ref body)) = message
            && client.session_extensions().get::<SaslStarted>().is_none()
        {
            if !is_sasl_initial_response(body) {
                self.failures.record(peer.ip());
                tracing::warn!(%peer, user, "failed login: malformed SASL initial response");
                return Err(fatal_error(
                    "08P01",
                    "expected a SASL initial response selecting SCRAM-SHA-256",
                ));
            }
            client.session_extensions().insert(SaslStarted);
        }
        match self.sasl.on_startup(client, message).await {
            Ok(()) => {
                if matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
                    let scope = self.scope_of(&user).await?;
                    client.session_extensions().insert(scope);
                    tracing::debug!(%peer, user, "authenticated");
                }
                Ok(())
            }
            Err(e) => {
                self.failures.record(peer.ip());
                tracing::warn!(%peer, user, error = %e, "failed login");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_sasl_initial_response;

    #[test]
    fn sasl_initial_responses_are_checked_before_decoding() {
        assert!(is_sasl_initial_response(b"SCRAM-SHA-256\0\0\0\0\x03abc"));
        assert!(is_sasl_initial_response(b"MD5\0\xff\xff\xff\xff"));
        assert!(!is_sasl_initial_response(b"secret\0"));
        assert!(!is_sasl_initial_response(b"secret"));
        assert!(!is_sasl_initial_response(b"X\0\0\0\0\x09abc"));
        assert!(!is_sasl_initial_response(b"X\0\xff\xff\xff\xfe"));
    }
}

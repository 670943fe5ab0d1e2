//! Accounts over IRC. SASL PLAIN (IRCv3 `sasl` 3.1: `AUTHENTICATE PLAIN`, base64 in chunks of
//! 400, 900/903/904/906/907/908), or `PASS` when the server has no `--server-password` (with
//! one, `PASS` is the server's and SASL proves the account). A registered nickname without
//! proof is refused with 433, so a client picks another nickname, as for one in use.

use base64::Engine;

use super::Session;
use crate::accounts::{AccountError, OperError, MAX_PASSWORD};
use crate::core::names::MAX_NICK;

/// The 433 text for a registered nickname nobody proved.
pub const REGISTERED: &str =
    "Nickname is registered to an account; log in with SASL PLAIN (or PASS) to use it";

/// The longest SASL reply gathered, in base64: a PLAIN reply holds two names (an account is a
/// nickname), two NULs and a password (2 × 32 + 2 + 600 bytes at most: 888 characters of
/// base64). Derived, so a longer nickname or password cannot make the longest reply fail.
const MAX_SASL: usize = (2 * MAX_NICK + 2 + MAX_PASSWORD).div_ceil(3) * 4;

/// What waits: for a hash, or for the cluster.
#[derive(Clone, PartialEq, Eq)]
pub enum Pending {
    /// NICK and USER are in (and CAP END): prove a registered nickname, then welcome.
    Complete,
    /// A SASL PLAIN reply: the account and its password.
    Sasl { account: String, password: String },
    /// `OPER name password`.
    Oper { name: String, password: String },
    /// `SILENCE` changed whom this connection ignores: write it to its account.
    KeepIgnores,
    /// `JOIN` on a cluster: these channels, each once its history is read from the stream.
    Join(String),
}

fn plain_text(line: &str) -> &str {
    line.strip_prefix("Error: ").unwrap_or(line)
}

impl Session {
    pub(super) fn proved(&self, name: &str) -> bool {
        self.account
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case(name))
    }

    /// `AUTHENTICATE`: starts PLAIN, gathers its reply, or aborts.
    pub(super) fn authenticate(&mut self, msg: &super::Message<'_>) {
        let Some(arg) = msg.param(0) else {
            return self.reply(461, &["AUTHENTICATE", "Not enough parameters"]);
        };
        if self.account.is_some() {
            return self.reply(907, &["You have already authenticated using SASL"]);
        }
        let Some(mut gathered) = self.sasl.take() else {
            if arg.eq_ignore_ascii_case("PLAIN") {
                self.sasl = Some(String::new());
                // Bare, as servers send it: clients wait for exactly this line.
                self.conn
                    .send(bytes::Bytes::from_static(b"AUTHENTICATE +\r\n"));
            } else {
                self.reply(908, &["PLAIN", "are available SASL mechanisms"]);
                self.reply(904, &["SASL authentication failed"]);
            }
            return;
        };
        if arg == "*" {
            return self.reply(906, &["SASL authentication aborted"]);
        }
        // One chunk over 400 breaks the framing (905, as SASL 3.1 says); many chunks that add
        // up to more than any PLAIN reply can be are a failed attempt (904, as ergo and
        // solanum answer), so that nobody can make the server gather without end.
        if arg.len() > 400 {
            return self.reply(
                905,
                &["SASL message too long: a chunk is at most 400 bytes"],
            );
        }
        if arg != "+" {
            gathered.push_str(arg);
        }
        if gathered.len() > MAX_SASL {
            return self.reply(
                904,
                &["SASL authentication failed: the reply is longer than any PLAIN reply"],
            );
        }
        if arg.len() == 400 {
            // A chunk of exactly 400 means more follows (or `+` to end).
            self.sasl = Some(gathered);
            return;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(gathered.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        let parts: Option<Vec<String>> =
            decoded.map(|d| d.split('\0').map(str::to_owned).collect());
        match parts.as_deref() {
            Some([authz, authc, password])
                if !authc.is_empty() && (authz.is_empty() || authz == authc) =>
            {
                self.pending = Some(Pending::Sasl {
                    account: authc.clone(),
                    password: password.clone(),
                });
            }
            _ => self.reply(904, &["SASL authentication failed"]),
        }
    }

    /// Does what waited for a hash.
    pub(super) async fn finish(&mut self, pending: Pending) {
        match pending {
            Pending::KeepIgnores => {
                let shared = self.conn.shared.clone();
                let member = self.conn.member.clone();
                if let Err(e) = crate::proto::ignore::keep(&shared, &member).await {
                    self.server_line("NOTICE", &[self.me(), plain(&e)]);
                }
            }
            Pending::Oper { name, password } => {
                let shared = self.conn.shared.clone();
                let member = self.conn.member.clone();
                match crate::proto::oper::oper_up(&shared, &member, &name, &password).await {
                    Ok(()) => {
                        self.reply(381, &["You are now an IRC operator"]);
                        let me = self.me().to_owned();
                        let mut out = bytes::BytesMut::new();
                        super::write(&mut out, &[], Some(&me), "MODE", &[&me, "+o"]);
                        self.send(out);
                    }
                    Err(OperError::Wrong(_)) => self.reply(464, &["Password incorrect"]),
                    Err(e @ OperError::Throttled(..)) => {
                        let text = e.to_string();
                        self.server_line("NOTICE", &[self.me(), plain_text(&text)]);
                        self.reply(464, &["Password incorrect"]);
                    }
                }
            }
            Pending::Sasl { account, password } => {
                let shared = self.conn.shared.clone();
                let addr = self.conn.member.addr.ip();
                match shared.accounts.verify(&account, &password, addr).await {
                    Ok(name) => {
                        tracing::info!(account = %name, "identified (SASL)");
                        let me = self.me().to_owned();
                        let user = self.user.as_ref().map_or("*", |(u, _)| u.as_str());
                        let mask = format!("{me}!{user}@{}", addr.to_canonical());
                        let logged_in = format!("You are now logged in as {name}");
                        self.reply(900, &[&mask, &name, &logged_in]);
                        self.reply(903, &["SASL authentication successful"]);
                        self.conn.member.set_account(Some(&name));
                        self.conn.shared.hub.account_changed(self.conn.member.id);
                        self.account = Some(name);
                        crate::proto::ignore::restore(&self.conn.shared, &self.conn.member);
                    }
                    Err(e) => {
                        self.server_line("NOTICE", &[self.me(), plain(&e)]);
                        self.reply(904, &["SASL authentication failed"]);
                    }
                }
            }
            Pending::Complete => {
                if self.prove_wanted().await && self.claim_wanted().await {
                    self.complete_registration();
                }
            }
            Pending::Join(targets) => self.join_across(&targets).await,
        }
    }

    /// True when the nickname asked for is free to take: unregistered, or proved by SASL or
    /// by `PASS`. Otherwise it is refused with 433 and forgotten.
    async fn prove_wanted(&mut self) -> bool {
        let Some(wanted) = self.wanted.clone() else {
            return false;
        };
        let shared = self.conn.shared.clone();
        if !shared.accounts.is_registered(&wanted) || self.proved(&wanted) {
            return true;
        }
        let server_password = shared.live.get().server_password.is_some();
        let refusal = match self.password.clone().filter(|_| !server_password) {
            None => REGISTERED.to_owned(),
            Some(password) => {
                let addr = self.conn.member.addr.ip();
                match shared.accounts.verify(&wanted, &password, addr).await {
                    Ok(name) => {
                        tracing::info!(account = %name, "identified (PASS)");
                        self.conn.member.set_account(Some(&name));
                        self.conn.shared.hub.account_changed(self.conn.member.id);
                        self.account = Some(name);
                        crate::proto::ignore::restore(&self.conn.shared, &self.conn.member);
                        return true;
                    }
                    Err(e) => plain(&e).to_owned(),
                }
            }
        };
        self.wanted = None;
        self.reply(433, &[&wanted, &refusal]);
        false
    }
}

/// An account error's line without the netcat `Error: ` prefix.
fn plain(e: &AccountError) -> &'static str {
    match e {
        AccountError::NoDataDir => "Accounts need a data directory; this server has none",
        AccountError::Unavailable(_) => "Accounts are unavailable on this server",
        AccountError::Registered(_) => "Nickname is already registered",
        AccountError::NotRegistered(_) => "Account is not registered",
        AccountError::Wrong(_) => "Password incorrect for the registered nickname",
        AccountError::Throttled(..) => "Too many failed attempts; try again in a minute",
        AccountError::BadPassword(_) => "Password has the wrong length",
        AccountError::Io(_) => "The account could not be read",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_plain_reply_is_gathered_and_one_byte_more_is_not() {
        let name = "n".repeat(MAX_NICK);
        let longest = format!("{name}\0{name}\0{}", "p".repeat(MAX_PASSWORD));
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(b64(&longest).len(), MAX_SASL);
        assert!(b64(&format!("{longest}p")).len() > MAX_SASL);
    }
}

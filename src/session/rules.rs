//! Which command is valid in which state: the one table the gateway
//! consults before answering or forwarding a command.
//!
//! From RFC 3501 §6 and RFC 9051 §6 (any / not authenticated / authenticated
//! / selected), plus the extensions the gateway knows.  Commands the gateway
//! does not know are forwarded after login: backends may implement
//! extensions the gateway has never heard of, and the backend remains the
//! authority on its own commands (README, "Unknown commands").

/// The states a command can be valid in (RFC 9051 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// CAPABILITY, NOOP, LOGOUT, ID: every state (RFC 9051 §6.1, RFC 2971).
    Any,
    /// STARTTLS, LOGIN, AUTHENTICATE: not authenticated only (§6.2).
    NotAuthenticated,
    /// Authenticated or selected (§6.3; selected inherits them, §6.4).
    Authenticated,
    /// ENABLE: authenticated but not selected (RFC 5161 §3.1).
    AuthenticatedOnly,
    /// Selected only (§6.4).
    Selected,
    /// Known, but refused by the gateway in every state because it would
    /// change the stream or the login behind the gateway's back.
    Refused(&'static str),
    /// Not in the table: forwarded after login, refused before.
    Unknown,
}

/// Look up a command name (upper case).
pub fn scope(name: &str) -> Scope {
    match name {
        "CAPABILITY" | "NOOP" | "LOGOUT" | "ID" => Scope::Any,
        "STARTTLS" | "LOGIN" | "AUTHENTICATE" => Scope::NotAuthenticated,
        "SELECT" | "EXAMINE" | "CREATE" | "DELETE" | "RENAME" | "SUBSCRIBE" | "UNSUBSCRIBE"
        | "LIST" | "LSUB" | "XLIST" | "STATUS" | "APPEND" | "NAMESPACE" | "IDLE" | "GETQUOTA"
        | "GETQUOTAROOT" | "SETQUOTA" | "GETACL" | "SETACL" | "DELETEACL" | "LISTRIGHTS"
        | "MYRIGHTS" | "GETMETADATA" | "SETMETADATA" | "NOTIFY" => Scope::Authenticated,
        "ENABLE" => Scope::AuthenticatedOnly,
        "CHECK" | "CLOSE" | "UNSELECT" | "EXPUNGE" | "SEARCH" | "ESEARCH" | "FETCH" | "STORE"
        | "COPY" | "MOVE" | "UID" | "SORT" | "THREAD" | "REPLACE" => Scope::Selected,
        "COMPRESS" => Scope::Refused("COMPRESS is not supported through this gateway"),
        "UNAUTHENTICATE" => Scope::Refused("UNAUTHENTICATE is not supported through this gateway"),
        _ => Scope::Unknown,
    }
}

/// Every command name the table knows, for bounded metric labels (and for
/// tests that go through the whole table).
pub const KNOWN: &[&str] = &[
    "CAPABILITY",
    "NOOP",
    "LOGOUT",
    "ID",
    "STARTTLS",
    "LOGIN",
    "AUTHENTICATE",
    "SELECT",
    "EXAMINE",
    "CREATE",
    "DELETE",
    "RENAME",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "LIST",
    "LSUB",
    "XLIST",
    "STATUS",
    "APPEND",
    "NAMESPACE",
    "IDLE",
    "GETQUOTA",
    "GETQUOTAROOT",
    "SETQUOTA",
    "GETACL",
    "SETACL",
    "DELETEACL",
    "LISTRIGHTS",
    "MYRIGHTS",
    "GETMETADATA",
    "SETMETADATA",
    "NOTIFY",
    "ENABLE",
    "CHECK",
    "CLOSE",
    "UNSELECT",
    "EXPUNGE",
    "SEARCH",
    "ESEARCH",
    "FETCH",
    "STORE",
    "COPY",
    "MOVE",
    "UID",
    "SORT",
    "THREAD",
    "REPLACE",
    "COMPRESS",
    "UNAUTHENTICATE",
];

/// The metric label for a command name: itself if the table knows it,
/// `other` otherwise, so clients cannot create label values.
pub fn metric_name(name: &str) -> &'static str {
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or("other")
}

/// Coarse state for the table (the session's own `State` carries data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    NotAuthenticated,
    Authenticated,
    Selected,
}

impl Phase {
    pub fn describe(self) -> &'static str {
        match self {
            Phase::NotAuthenticated => "not authenticated",
            Phase::Authenticated => "authenticated",
            Phase::Selected => "selected",
        }
    }
}

/// Whether `scope` admits a command in `phase`.
pub fn allowed(scope: Scope, phase: Phase) -> bool {
    match scope {
        Scope::Any => true,
        Scope::NotAuthenticated => phase == Phase::NotAuthenticated,
        Scope::Authenticated => phase != Phase::NotAuthenticated,
        Scope::AuthenticatedOnly => phase == Phase::Authenticated,
        Scope::Selected => phase == Phase::Selected,
        Scope::Refused(_) => false,
        Scope::Unknown => phase != Phase::NotAuthenticated,
    }
}

/// What to tell the client when a command is not valid: names the state
/// and what would make it valid.
pub fn refusal(name: &str, scope: Scope, phase: Phase) -> String {
    let needs = match scope {
        Scope::NotAuthenticated => "only valid before login",
        Scope::Authenticated => "requires login",
        Scope::AuthenticatedOnly if phase == Phase::Selected => {
            "only valid in authenticated state (not with a mailbox selected)"
        }
        Scope::AuthenticatedOnly => "requires login",
        Scope::Selected => "requires a selected mailbox (SELECT or EXAMINE first)",
        Scope::Refused(why) => return why.to_owned(),
        Scope::Unknown if phase == Phase::NotAuthenticated => "is unknown or requires login",
        Scope::Any | Scope::Unknown => "is not valid here",
    };
    format!("{name} {needs}; session is in {} state", phase.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        use Phase::*;
        for (name, na, au, se) in [
            ("CAPABILITY", true, true, true),
            ("ID", true, true, true),
            ("LOGIN", true, false, false),
            ("STARTTLS", true, false, false),
            ("SELECT", false, true, true),
            ("ENABLE", false, true, false),
            ("FETCH", false, false, true),
            ("UID", false, false, true),
            ("XFOO", false, true, true),
            ("COMPRESS", false, false, false),
            ("UNAUTHENTICATE", false, false, false),
        ] {
            let s = scope(name);
            assert_eq!(
                [
                    allowed(s, NotAuthenticated),
                    allowed(s, Authenticated),
                    allowed(s, Selected)
                ],
                [na, au, se],
                "{name}"
            );
        }
        assert_eq!(metric_name("fetch"), "FETCH");
        assert_eq!(metric_name("XEVIL\r\n"), "other");
        for k in KNOWN {
            assert_ne!(scope(k), Scope::Unknown, "{k}");
        }
        assert_eq!(
            refusal("FETCH", scope("FETCH"), Authenticated),
            "FETCH requires a selected mailbox (SELECT or EXAMINE first); session is in authenticated state"
        );
    }
}

//! NATS server URLs that carry credentials (`nats://user:password@host:4222`,
//! `nats://token@host:4222`, comma-separated lists of them). The credentials
//! are taken out before the list reaches the client library, which keeps
//! server addresses in its own log lines, and [`redacted`] is the only form
//! of a URL that a log line or an error of ours shows.

use percent_encoding::percent_decode_str;

/// What a URL's userinfo gives: `user:password`, or a lone token.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum UrlCredentials {
    UserPassword { user: String, password: String },
    Token(String),
}

/// A server list with every userinfo taken out, and the first userinfo found.
pub(crate) struct ServerList {
    pub servers: String,
    pub credentials: Option<UrlCredentials>,
}

impl ServerList {
    pub fn parse(urls: &str) -> ServerList {
        let mut credentials = None;
        let servers: Vec<String> = urls
            .split(',')
            .map(|server| {
                let parts = Parts::of(server.trim());
                if credentials.is_none() {
                    credentials = parts.userinfo.map(UrlCredentials::parse);
                }
                parts.joined(None)
            })
            .collect();
        ServerList {
            servers: servers.join(","),
            credentials,
        }
    }
}

impl UrlCredentials {
    fn parse(userinfo: &str) -> UrlCredentials {
        let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
        match userinfo.split_once(':') {
            Some((user, password)) => UrlCredentials::UserPassword {
                user: decode(user),
                password: decode(password),
            },
            None => UrlCredentials::Token(decode(userinfo)),
        }
    }
}

/// The server list as it may be shown: any userinfo (user and password, or a
/// token) replaced by `***`.
pub fn redacted(urls: &str) -> String {
    urls.split(',')
        .map(|server| {
            let parts = Parts::of(server.trim());
            match parts.userinfo {
                Some(_) => parts.joined(Some("***")),
                None => parts.joined(None),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One server address cut around its userinfo: `<scheme://><userinfo@><rest>`.
struct Parts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    rest: &'a str,
}

impl<'a> Parts<'a> {
    fn of(server: &'a str) -> Parts<'a> {
        let (scheme, after_scheme) = match server.find("://") {
            Some(at) => server.split_at(at + 3),
            None => ("", server),
        };
        let authority_end = after_scheme
            .find(['/', '?', '#'])
            .unwrap_or(after_scheme.len());
        match after_scheme[..authority_end].rfind('@') {
            Some(at) => Parts {
                scheme,
                userinfo: Some(&after_scheme[..at]),
                rest: &after_scheme[at + 1..],
            },
            None => Parts {
                scheme,
                userinfo: None,
                rest: after_scheme,
            },
        }
    }

    fn joined(&self, userinfo: Option<&str>) -> String {
        match userinfo {
            Some(userinfo) => format!("{}{userinfo}@{}", self.scheme, self.rest),
            None => format!("{}{}", self.scheme, self.rest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_and_tokens_never_survive_redaction() {
        let urls = "nats://agent:s3cr3t@nats-0:4222, tls://t0ken-xyz@nats-1:4222,nats-2:4222";
        let shown = redacted(urls);
        assert_eq!(
            shown,
            "nats://***@nats-0:4222,tls://***@nats-1:4222,nats-2:4222"
        );
        assert_eq!(redacted("user:pw@host:4222"), "***@host:4222");
        assert_eq!(
            redacted("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222",
            "a URL without credentials is shown as it is"
        );
    }

    #[test]
    fn credentials_are_taken_out_of_the_server_list() {
        let list = ServerList::parse("nats://agent:p%40ss@nats-0:4222,nats://nats-1:4222");
        assert_eq!(list.servers, "nats://nats-0:4222,nats://nats-1:4222");
        assert!(matches!(
            list.credentials,
            Some(UrlCredentials::UserPassword { ref user, ref password })
                if user == "agent" && password == "p@ss"
        ));
        let token = ServerList::parse("nats://tok@nats-0:4222");
        assert!(matches!(token.credentials, Some(UrlCredentials::Token(ref t)) if t == "tok"));
        assert!(ServerList::parse("nats://h:4222").credentials.is_none());
    }

    #[test]
    fn an_at_sign_after_the_host_is_not_userinfo() {
        assert_eq!(redacted("ws://host:80/path@x"), "ws://host:80/path@x");
    }
}

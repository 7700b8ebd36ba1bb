//! The server's live event stream (`/api/events/out`, the WebSocket that
//! `prefect events stream` reads): a subscriber authenticates, sends a
//! filter, then receives every matching event as the server takes it in.
//! Opened through the client's own HTTP stack (an HTTP/1.1 upgrade), so it
//! has the same TLS roots, proxies and credentials as every other call.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::client::PrefectClient;
use crate::error::PrefectError;
use crate::events::{Event, EventFilter};

/// The WebSocket subprotocol Prefect's sockets speak.
const PROTOCOL: &str = "prefect";

/// An open event stream.
pub struct EventSubscription {
    socket: WebSocketStream<reqwest::Upgraded>,
    /// Why the server closed the stream, when it said.
    closed_because: Option<String>,
}

impl std::fmt::Debug for EventSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSubscription").finish_non_exhaustive()
    }
}

/// A message from the server.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMessage {
    AuthSuccess,
    AuthFailure {
        #[serde(default)]
        reason: Option<String>,
    },
    Event {
        event: Box<Event>,
    },
    #[serde(other)]
    Other,
}

impl PrefectClient {
    /// Opens the stream of the events `filter` matches from now on (no
    /// backfill of earlier ones; an unset `until` means "for good"). The
    /// whole opening (upgrade, authentication, filter) is cut at the request
    /// timeout; reading has no deadline, since a quiet server sends nothing.
    pub async fn subscribe_events(
        &self,
        filter: &EventFilter,
    ) -> Result<EventSubscription, PrefectError> {
        let timeout = self.request_timeout();
        tokio::time::timeout(timeout, self.open_event_stream(filter))
            .await
            .map_err(|_| PrefectError::Stream(format!("not open within {timeout:?}")))?
    }

    async fn open_event_stream(
        &self,
        filter: &EventFilter,
    ) -> Result<EventSubscription, PrefectError> {
        let upgraded = self
            .transport
            .upgrade_to_websocket(&["events", "out"], PROTOCOL)
            .await?;
        let socket = WebSocketStream::from_raw_socket(upgraded, Role::Client, None).await;
        let mut subscription = EventSubscription {
            socket,
            closed_because: None,
        };
        let token = self.transport.stream_token();
        subscription
            .send(serde_json::json!({"type": "auth", "token": token}))
            .await?;
        let mut answer = subscription.receive().await?;
        while matches!(answer, Some(ServerMessage::Other)) {
            answer = subscription.receive().await?;
        }
        match answer {
            Some(ServerMessage::AuthSuccess) => {}
            Some(ServerMessage::AuthFailure { reason }) => {
                return Err(PrefectError::Unauthorized {
                    status: 401,
                    detail: reason.unwrap_or_else(|| "event stream authentication failed".into()),
                })
            }
            Some(_) => {
                return Err(PrefectError::Stream(
                    "unexpected answer to authentication".into(),
                ))
            }
            // Prefect refuses a bad token by closing the socket (1008) with a reason.
            None => {
                let reason = subscription.closed_because.take();
                return Err(PrefectError::Unauthorized {
                    status: 401,
                    detail: reason
                        .unwrap_or_else(|| "the event stream closed at authentication".into()),
                });
            }
        }
        let mut filter = filter.to_filter_json();
        if let Some(occurred) = filter.get_mut("occurred").and_then(|o| o.as_object_mut()) {
            let now = chrono::Utc::now();
            occurred.entry("since").or_insert(serde_json::json!(now));
            let later = now + chrono::TimeDelta::days(3650);
            occurred.entry("until").or_insert(serde_json::json!(later));
        }
        subscription
            .send(serde_json::json!({"type": "filter", "filter": filter, "backfill": false}))
            .await?;
        Ok(subscription)
    }
}

impl EventSubscription {
    /// Why the server closed the stream, if it said (after `next_event`
    /// returned `Ok(None)`).
    pub fn closed_because(&self) -> Option<&str> {
        self.closed_because.as_deref()
    }

    /// The next event; `Ok(None)` once the server closed the stream. An
    /// error when nothing at all (not even a ping) comes for `idle`: a
    /// connection that died without a close (the server's host vanished, a
    /// proxy dropped it) would otherwise be waited on for good.
    pub async fn next_event(&mut self, idle: Duration) -> Result<Option<Event>, PrefectError> {
        loop {
            let message = tokio::time::timeout(idle, self.receive())
                .await
                .map_err(|_| {
                    PrefectError::Stream(format!("nothing from the server for {idle:?}"))
                })?;
            match message? {
                Some(ServerMessage::Event { event }) => return Ok(Some(*event)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }

    async fn send(&mut self, message: serde_json::Value) -> Result<(), PrefectError> {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .map_err(|error| PrefectError::Stream(error.to_string()))
    }

    /// The next message from the server: a text message parsed, anything else
    /// (a ping, answered on the way) as [`ServerMessage::Other`].
    async fn receive(&mut self) -> Result<Option<ServerMessage>, PrefectError> {
        if let Some(message) = self.socket.next().await {
            let message = message.map_err(|error| PrefectError::Stream(error.to_string()))?;
            let text = match message {
                Message::Text(text) => text,
                Message::Close(frame) => {
                    self.closed_because = frame
                        .map(|frame| frame.reason.to_string())
                        .filter(|reason| !reason.is_empty());
                    return Ok(None);
                }
                _ => return Ok(Some(ServerMessage::Other)),
            };
            let parsed = serde_json::from_str(text.as_str()).map_err(|error| {
                PrefectError::Stream(format!("undecodable message from the server: {error}"))
            })?;
            return Ok(Some(parsed));
        }
        Ok(None)
    }
}

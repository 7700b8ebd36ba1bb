//! The client against a real Prefect server that demands an auth string
//! (`PREFECT_SERVER_API_AUTH_STRING`) and CSRF tokens
//! (`PREFECT_SERVER_CSRF_PROTECTION_ENABLED=true`).

use prefect_client::{ClientConfig, PrefectClient, PrefectError, WorkPoolCreate};
use serde_json::json;
use test_stack::prefect::{unique_name, PrefectServer, PrefectServerOptions};

const AUTH_STRING: &str = "admin:correct-horse";

#[tokio::test]
async fn auth_string_and_csrf_protected_server() {
    let server = tokio::task::spawn_blocking(|| {
        PrefectServer::start_with(PrefectServerOptions {
            csrf_protection: true,
            auth_string: Some(AUTH_STRING.into()),
            ..PrefectServerOptions::default()
        })
    })
    .await
    .unwrap();
    let config = ClientConfig::new(&server.api_url()).unwrap();

    // Health is exempt from auth.
    let anonymous = PrefectClient::new(config.clone()).unwrap();
    anonymous.health().await.unwrap();
    let refused = anonymous.read_work_pool("anything").await;
    assert!(
        matches!(refused, Err(PrefectError::Unauthorized { status: 401, .. })),
        "{refused:?}"
    );

    // The OSS server accepts only Basic; a Bearer key is refused.
    let bearer = PrefectClient::new(config.clone().with_api_key(AUTH_STRING)).unwrap();
    let refused = bearer.read_work_pool("anything").await;
    assert!(
        matches!(refused, Err(PrefectError::Unauthorized { .. })),
        "{refused:?}"
    );

    // With the auth string, reads work, and a mutating request passes the
    // CSRF middleware because the client fetched and sent a token.
    let authorised = PrefectClient::new(config.clone().with_auth_string(AUTH_STRING)).unwrap();
    let pool = unique_name("secured-pool");
    let created = authorised
        .create_work_pool(&WorkPoolCreate::new(&pool, "kubernetes", json!({})))
        .await
        .expect("create a pool through auth and CSRF");
    assert_eq!(created.name, pool);
    authorised
        .send_worker_heartbeat(&pool, "secured-worker", 30)
        .await
        .expect("heartbeat with the cached CSRF token");

    // The same mutating request without the CSRF handshake is refused, which
    // shows the protection is really on.
    let mut without_csrf = config.with_auth_string(AUTH_STRING);
    without_csrf.csrf_support = false;
    let no_token = PrefectClient::new(without_csrf)
        .unwrap()
        .send_worker_heartbeat(&pool, "secured-worker", 30)
        .await;
    match no_token {
        Err(PrefectError::Client {
            status: 403,
            detail,
        }) => {
            assert!(detail.contains("CSRF"), "{detail}")
        }
        other => panic!("expected a CSRF refusal, got {other:?}"),
    }
}

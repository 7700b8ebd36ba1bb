//! The Prefect server launcher: a child `prefect` CLI reaches the server
//! with [`PrefectServer::env`], and dropping a server stops it.

use std::net::TcpStream;
use std::process::Command;

use test_stack::prefect::{unique_name, PrefectServer};

fn prefect_cli(server: &PrefectServer, args: &[&str]) -> std::process::Output {
    Command::new(server.prefect_cli())
        .args(args)
        .env_remove("PREFECT_API_KEY")
        .env_remove("PREFECT_PROFILE")
        .envs(server.env())
        .output()
        .expect("run the prefect CLI")
}

#[test]
fn child_cli_reaches_the_shared_server_through_env() {
    let server = PrefectServer::shared();
    assert!(server.python().exists(), "{}", server.python().display());
    let pool = unique_name("cli-pool");
    let created = prefect_cli(
        server,
        &["work-pool", "create", &pool, "--type", "kubernetes"],
    );
    assert!(
        created.status.success(),
        "create failed: {}\n{}",
        String::from_utf8_lossy(&created.stdout),
        String::from_utf8_lossy(&created.stderr)
    );
    let inspected = prefect_cli(server, &["work-pool", "inspect", &pool]);
    let stdout = String::from_utf8_lossy(&inspected.stdout);
    assert!(inspected.status.success(), "inspect failed: {stdout}");
    assert!(stdout.contains(&pool), "{stdout}");
}

#[test]
fn dropping_a_server_stops_it() {
    let server = PrefectServer::start();
    let port = server.port();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(server);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts connections after drop"
    );
}

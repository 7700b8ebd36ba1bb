//! Compiles `proto/prefect_k8s/v1/*.proto` with `protox` (a pure-Rust protobuf
//! compiler), so a fresh machine builds without a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/prefect_k8s/v1/flow_run.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}

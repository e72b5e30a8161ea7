//! Generates the gRPC code of `proto/ferrox/v1/*.proto` (package `ferrox.v1`).

fn main() -> std::io::Result<()> {
    // Use the system's protoc when there is one (or $PROTOC), else the vendored one.
    let system = std::env::var_os("PROTOC").is_some()
        || std::process::Command::new("protoc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !system {
        let p = protoc_bin_vendored::protoc_bin_path().map_err(std::io::Error::other)?;
        // Build scripts are single-threaded; tonic-prost-build reads PROTOC.
        std::env::set_var("PROTOC", p);
    }
    let protos = [
        "proto/ferrox/v1/node.proto",
        "proto/ferrox/v1/pool.proto",
        "proto/ferrox/v1/volume.proto",
        "proto/ferrox/v1/snapshot.proto",
        "proto/ferrox/v1/target.proto",
    ];
    tonic_prost_build::configure()
        .btree_map(".")
        // ferroxctl prints every answer as JSON with `-o json`.
        .type_attribute(".", "#[derive(serde::Serialize)]")
        .compile_protos(&protos, &["proto"])
}

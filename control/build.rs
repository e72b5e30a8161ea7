//! Generates the gRPC code of `proto/ferrox/v1/*.proto` (package `ferrox.v1`).

fn main() -> std::io::Result<()> {
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

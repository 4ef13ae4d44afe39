//! Generates the tonic clients and servers from the .proto files. Needs `protoc`
//! (Debian: protobuf-compiler, with libprotobuf-dev for the well-known types).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure().compile_protos(
        &[
            "mayastor/mayastor.proto",
            "mayastor/v1/pool.proto",
            "mayastor/v1/replica.proto",
            "mayastor/v1/host.proto",
            "mayastor/v1/registration.proto",
        ],
        &["."],
    )?;
    Ok(())
}

// zms: the upstream zmq-sys 0.12.0 build script, changed in three places: libzmq is built with
// CURVE by linking the libsodium that `libsodium-sys-stable` builds from its bundled source
// (upstream passes `with_libsodium(None)`, which leaves CURVE out); with its draft socket
// options, for ZMQ_IN_BATCH_SIZE (the size of each connection's receive buffer); and with
// libzmq's own C++ warnings silenced (cargo replays a path dependency's build warnings on
// every build).

use std::env;

pub fn configure() {
    println!("cargo:rerun-if-changed=build/main.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");

    if env::var_os("CXXFLAGS").is_none() {
        env::set_var("CXXFLAGS", "-w");
    }
    let lib = env::var("DEP_SODIUM_LIB").expect("libsodium-sys-stable exports its lib directory");
    let include = env::var("DEP_SODIUM_INCLUDE").expect("libsodium-sys-stable exports its include directory");
    zeromq_src::Build::new()
        .with_libsodium(Some(zeromq_src::LibLocation::new(lib, include)))
        .enable_draft(true)
        .build();
}

fn main() {
    configure()
}

// zms: the upstream zmq-sys 0.12.0 build script, changed in four places: libzmq is built with
// CURVE by linking the libsodium that `libsodium-sys-stable` builds from its bundled source
// (upstream passes `with_libsodium(None)`, which leaves CURVE out); with its draft socket
// options, for ZMQ_IN_BATCH_SIZE (the size of each connection's receive buffer); on Linux with
// eventfd for its wake-ups between threads, as libzmq's own build does; and with libzmq's own
// C++ warnings silenced (cargo replays a path dependency's build warnings on every build).

use std::env;

pub fn configure() {
    println!("cargo:rerun-if-changed=build/main.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");

    // libzmq's own warnings are silenced unless the builder sets CXXFLAGS.
    let mut flags = env::var("CXXFLAGS").unwrap_or_else(|_| "-w".into());
    // zeromq-src leaves out libzmq's eventfd on Linux, where libzmq's own CMake build turns it
    // on: without it, each wake-up of another thread is a send on a socketpair.
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        flags.push_str(" -DZMQ_HAVE_EVENTFD -DZMQ_HAVE_EVENTFD_CLOEXEC");
    }
    env::set_var("CXXFLAGS", flags);
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

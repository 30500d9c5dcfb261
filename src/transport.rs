//! ZeroMQ helpers shared by servers and clients: addresses, sockets with safe defaults, polling.
//!
//! Every socket made here has LINGER 0 (so a context never hangs on exit) and, for clients,
//! send and receive timeouts, so no network wait is unbounded.

use std::time::Duration;

use crate::keys::{self, KeyPair};
use crate::{errinput, Result};

/// Turns a user's `HOST:PORT` (or a full `tcp://HOST:PORT`) into a ZeroMQ endpoint.
/// Port `0` or `*` means "any free port" when binding.
///
/// # Errors
/// [`crate::Error::Input`] when the address has no valid port.
pub fn endpoint(address: &str) -> Result<String> {
    let address = address.trim();
    let bare = address.strip_prefix("tcp://").unwrap_or(address);
    let (host, port) = bare
        .rsplit_once(':')
        .ok_or_else(|| errinput!("address '{address}' must be HOST:PORT, e.g. 127.0.0.1:5555"))?;
    if host.is_empty() {
        return Err(errinput!(
            "address '{address}' has no host; try 127.0.0.1:{port}"
        ));
    }
    let port = match port {
        "0" | "*" => "*".to_string(),
        p => match p.parse::<u16>() {
            Ok(n) if n > 0 => n.to_string(),
            _ => return Err(errinput!("address '{address}' has no valid port (1-65535)")),
        },
    };
    Ok(format!("tcp://{host}:{port}"))
}

/// Checks an address others will connect to: `HOST:PORT` with a real port (not `0` or `*`).
/// Returns it without any `tcp://` prefix.
///
/// # Errors
/// [`crate::Error::Input`] naming the fault.
pub fn connectable(address: &str) -> Result<String> {
    let endpoint = endpoint(address)?;
    if endpoint.ends_with(":*") {
        return Err(errinput!(
            "address '{address}' has no fixed port to connect to"
        ));
    }
    Ok(self::address(&endpoint))
}

/// The `HOST:PORT` form of a `tcp://` endpoint, as shown to users and stored in the directory.
pub fn address(endpoint: &str) -> String {
    endpoint
        .strip_prefix("tcp://")
        .unwrap_or(endpoint)
        .to_string()
}

/// Splits a comma-separated list of addresses (`--server A,B`) into endpoints.
///
/// # Errors
/// The first invalid address.
pub fn endpoints(list: &str) -> Result<Vec<String>> {
    let all: Vec<String> = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(endpoint)
        .collect::<Result<_>>()?;
    if all.is_empty() {
        return Err(errinput!("no server address given"));
    }
    Ok(all)
}

/// A socket with LINGER 0.
///
/// # Errors
/// When libzmq cannot create the socket.
pub fn socket(ctx: &zmq::Context, kind: zmq::SocketType) -> Result<zmq::Socket> {
    let socket = ctx.socket(kind)?;
    socket.set_linger(0)?;
    Ok(socket)
}

/// A server's ROUTER: bounded inbound frames, errors instead of silent drops to gone peers.
///
/// # Errors
/// When the socket cannot be made or bound.
pub fn bind_router(
    ctx: &zmq::Context,
    endpoint: &str,
    max_frame: i64,
    curve: Option<&KeyPair>,
) -> Result<(zmq::Socket, String)> {
    let mut router = socket(ctx, zmq::ROUTER)?;
    router.set_maxmsgsize(max_frame)?;
    router.set_router_mandatory(true)?;
    router.set_sndhwm(SERVER_SNDHWM)?;
    router.set_rcvhwm(SERVER_RCVHWM)?;
    router.set_handshake_ivl(SERVER_HANDSHAKE_MS)?;
    set_in_batch_size(&mut router, SERVER_IN_BATCH)?;
    if let Some(keys) = curve {
        // Every peer must complete a CURVE handshake; ZAP (see `zap`) names it by its key.
        router.set_curve_server(true)?;
        router.set_curve_secretkey(&keys::raw(&keys.secret)?)?;
        router.set_zap_domain(ZAP_DOMAIN)?;
    }
    let resolved = resolve_bind(endpoint)?;
    if resolved.contains('[') {
        router.set_ipv6(true)?;
    }
    router
        .bind(&resolved)
        .map_err(|e| errinput!("cannot bind {}: {e}", address(endpoint)))?;
    let actual = router
        .get_last_endpoint()?
        .unwrap_or_else(|_| endpoint.to_string());
    Ok((router, actual))
}

/// The endpoint to bind for `endpoint`, with a host name resolved to an IP address. libzmq
/// takes a bind host as an IP address or an interface name, never a DNS name ("localhost"
/// fails with "No such device"), while a connect resolves names; servers resolve them here so
/// an address works for both. IPv4 is preferred, as for a client's connect. A host that does
/// not resolve is left to libzmq, which may know it as an interface (`eth0`).
///
/// # Errors
/// An endpoint that is not `tcp://HOST:PORT`.
pub fn resolve_bind(endpoint: &str) -> Result<String> {
    use std::net::{IpAddr, ToSocketAddrs};
    let bare = address(endpoint);
    let (host, port) = bare
        .rsplit_once(':')
        .ok_or_else(|| errinput!("address '{bare}' must be HOST:PORT"))?;
    let plain = host.trim_start_matches('[').trim_end_matches(']');
    if host == "*" || plain.parse::<IpAddr>().is_ok() {
        return Ok(endpoint.to_string());
    }
    let Ok(found) = (plain, 0).to_socket_addrs() else {
        return Ok(endpoint.to_string());
    };
    let ips: Vec<IpAddr> = found.map(|a| a.ip()).collect();
    Ok(match ips.iter().find(|ip| ip.is_ipv4()).or(ips.first()) {
        Some(IpAddr::V4(ip)) => format!("tcp://{ip}:{port}"),
        Some(IpAddr::V6(ip)) => format!("tcp://[{ip}]:{port}"),
        None => endpoint.to_string(),
    })
}

/// Sets how many bytes libzmq reads from each connection of `socket` at a time, and so the
/// size of the buffer it keeps per connection (`ZMQ_IN_BATCH_SIZE`, a draft option the
/// vendored libzmq is built with; the `zmq` crate has no setter for it). Applies to
/// connections made from now on.
fn set_in_batch_size(socket: &mut zmq::Socket, bytes: i32) -> Result<()> {
    const ZMQ_IN_BATCH_SIZE: i32 = 101;
    // SAFETY: the socket pointer is live for the borrow, and the value is an `int` of the size
    // given, as libzmq expects for this option; errno is read right after the call.
    let errno = unsafe {
        let rc = zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            ZMQ_IN_BATCH_SIZE,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>(),
        );
        (rc != 0).then(|| zmq_sys::zmq_errno())
    };
    match errno {
        Some(errno) => Err(zmq::Error::from_raw(errno).into()),
        None => Ok(()),
    }
}

/// The ZAP domain of zms servers.
pub const ZAP_DOMAIN: &str = "zms";

/// Makes `socket` a CURVE client of the server whose public key is `server_key`.
/// Call before `connect`.
///
/// # Errors
/// A malformed key, or libzmq without CURVE.
pub fn curve_client(socket: &zmq::Socket, keys: &KeyPair, server_key: &str) -> Result<()> {
    socket.set_curve_serverkey(&keys::raw(server_key)?)?;
    socket.set_curve_publickey(&keys::raw(&keys.public)?)?;
    socket.set_curve_secretkey(&keys::raw(&keys.secret)?)?;
    Ok(())
}

/// Where a secure server at `endpoint` answers KEY in plaintext: the next port up.
///
/// # Errors
/// An endpoint without a numeric port.
pub fn key_service(endpoint: &str) -> Result<String> {
    let (host, port) = endpoint
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?.checked_add(1)?)))
        .ok_or_else(|| errinput!("'{endpoint}' has no port to put a key service beside"))?;
    Ok(format!("{host}:{port}"))
}

/// Asks the key service of the server at `address` (`HOST:PORT`) for its public key.
///
/// # Errors
/// No answer within `timeout`, or an answer that is not a key.
pub fn fetch_key(
    ctx: &zmq::Context,
    address: &str,
    timeout: std::time::Duration,
) -> Result<String> {
    let service = key_service(&endpoint(address)?)?;
    let dealer = socket(ctx, zmq::DEALER)?;
    dealer.set_sndtimeo(timeout.as_millis() as i32)?;
    dealer.set_rcvtimeo(timeout.as_millis() as i32)?;
    dealer.connect(&service)?;
    let request = crate::protocol::codec::encode_request(1, &crate::protocol::Request::Key);
    let no_answer = || {
        crate::Error::Timeout(format!(
            "no key service at {} (is {address} running --secure?)",
            self::address(&service)
        ))
    };
    dealer.send(request, 0).map_err(|_| no_answer())?;
    let frame = dealer.recv_bytes(0).map_err(|_| no_answer())?;
    match crate::protocol::codec::decode_incoming(&frame) {
        Ok(crate::protocol::codec::Incoming::Reply(_, crate::protocol::Reply::Key(key)))
            if !key.is_empty() =>
        {
            keys::raw(&key)?;
            Ok(key)
        }
        _ => Err(errinput!(
            "{address} offered no key (is it running --secure?)"
        )),
    }
}

/// A secure server's plaintext key service: answers KEY with the server's public key and
/// anything else with UNAUTHORIZED, so a client can pin the key on first use.
pub struct KeyService {
    router: zmq::Socket,
    public: String,
}

impl KeyService {
    /// Binds beside the server's `endpoint` (see [`key_service`]).
    ///
    /// # Errors
    /// When that port cannot be bound.
    pub fn bind(ctx: &zmq::Context, endpoint: &str, public: &str) -> Result<KeyService> {
        let at = key_service(endpoint)?;
        let (router, _) = bind_router(ctx, &at, 1024, None)
            .map_err(|e| errinput!("the key service goes on the port after the server's: {e}"))?;
        Ok(KeyService {
            router,
            public: public.to_string(),
        })
    }

    /// The socket, for polling.
    pub fn socket(&self) -> &zmq::Socket {
        &self.router
    }

    /// Answers the requests waiting, at most [`KEY_SERVICE_BATCH`], without blocking; returns
    /// how many it read. The cap keeps a flood of this plaintext port from holding up the
    /// secure server polling beside it: the rest wait for the next wake-up.
    pub fn serve(&self) -> usize {
        use crate::protocol::{codec, ErrorCode, Reply, Request};
        let mut read = 0;
        while read < KEY_SERVICE_BATCH {
            let Ok(Some(envelope)) = recv_envelope(&self.router, false) else {
                break;
            };
            read += 1;
            let (req_id, reply) = match envelope.frames.as_slice() {
                [frame] => match codec::decode_request(frame) {
                    Ok((id, Request::Key)) => (id, Reply::Key(self.public.clone())),
                    Ok((id, _)) => (
                        id,
                        Reply::Error {
                            code: ErrorCode::Unauthorized,
                            reason: format!(
                                "this server requires CURVE (connect with --secure); its key is {}",
                                self.public
                            ),
                        },
                    ),
                    Err(e) => (
                        e.req_id,
                        Reply::Error {
                            code: e.code,
                            reason: e.reason,
                        },
                    ),
                },
                _ => continue,
            };
            let frame = codec::encode_reply(req_id, &reply);
            let _ = self
                .router
                .send_multipart([envelope.route.as_slice(), frame.as_slice()], zmq::DONTWAIT);
        }
        read
    }
}

/// Most key requests a key service answers per wake-up of its server.
pub const KEY_SERVICE_BATCH: usize = 64;

/// Binds a server's ROUTER and, with `curve`, its key service on the next port. For an
/// ephemeral port (`:*`) the pair is retried until both ports are free (the neighbour of a
/// random port may be anyone's); for a fixed port, a taken neighbour is a clear error.
///
/// # Errors
/// When the ports cannot be bound.
pub fn bind_server(
    ctx: &zmq::Context,
    endpoint: &str,
    max_frame: i64,
    curve: Option<&KeyPair>,
) -> Result<(zmq::Socket, String, Option<KeyService>)> {
    const TRIES: usize = 50;
    let ephemeral = endpoint.ends_with(":*");
    let mut tries = 0;
    loop {
        let (router, bound) = bind_router(ctx, endpoint, max_frame, curve)?;
        let Some(keys) = curve else {
            return Ok((router, bound, None));
        };
        match KeyService::bind(ctx, &bound, &keys.public) {
            Ok(service) => return Ok((router, bound, Some(service))),
            Err(_) if ephemeral && tries < TRIES => tries += 1,
            Err(err) => return Err(err),
        }
    }
}

/// One frame sent to many peers: libzmq shares its buffer between the sends, counting
/// references (`zmq_msg_copy`), where `Socket::send` would allocate and copy it per peer. The
/// group server's fan-out spends most of its time there.
pub struct SharedFrame {
    msg: zmq_sys::zmq_msg_t,
}

impl SharedFrame {
    /// A frame holding `data`.
    pub fn new(data: &[u8]) -> SharedFrame {
        let mut msg = zmq_sys::zmq_msg_t::default();
        // SAFETY: `msg` is initialised with room for `data.len()` bytes, which are then filled;
        // init_size fails only when out of memory, which aborts like any Rust allocation.
        unsafe {
            let rc = zmq_sys::zmq_msg_init_size(&mut msg, data.len());
            assert_eq!(rc, 0, "zmq_msg_init_size failed: out of memory");
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                zmq_sys::zmq_msg_data(&mut msg) as *mut u8,
                data.len(),
            );
        }
        SharedFrame { msg }
    }

    /// Sends the frame on `socket` (another reference to the same buffer).
    ///
    /// # Errors
    /// As `zmq_msg_send`: EAGAIN when the peer's queue is full, EHOSTUNREACH for a gone peer.
    pub fn send(&mut self, socket: &mut zmq::Socket, flags: i32) -> Result<(), zmq::Error> {
        let mut copy = zmq_sys::zmq_msg_t::default();
        // SAFETY: `copy` is initialised before use and closed if the send does not take it;
        // a sent message belongs to libzmq. `socket` is a live socket used on this thread only.
        unsafe {
            zmq_sys::zmq_msg_init(&mut copy);
            if zmq_sys::zmq_msg_copy(&mut copy, &mut self.msg) == -1 {
                zmq_sys::zmq_msg_close(&mut copy);
                return Err(zmq::Error::from_raw(zmq_sys::zmq_errno()));
            }
            if zmq_sys::zmq_msg_send(&mut copy, socket.as_mut_ptr(), flags) == -1 {
                let err = zmq::Error::from_raw(zmq_sys::zmq_errno());
                zmq_sys::zmq_msg_close(&mut copy);
                return Err(err);
            }
        }
        Ok(())
    }
}

impl Drop for SharedFrame {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`; libzmq frees the buffer once no copy holds it.
        unsafe {
            zmq_sys::zmq_msg_close(&mut self.msg);
        }
    }
}

/// One request as a ROUTER received it.
#[derive(Debug)]
pub struct Envelope {
    /// The peer's routing id.
    pub route: Vec<u8>,
    /// The frames after the routing id (a valid ZMS message has exactly one), as libzmq
    /// received them: decoded in place, never copied.
    pub frames: Vec<zmq::Message>,
    /// The peer's CURVE public key (Z85), as ZAP authenticated it; `None` without security.
    pub peer_key: Option<String>,
}

/// Receives one message from a ROUTER without blocking: `Ok(None)` when there is none. With
/// `with_key` (a CURVE server), the peer's key is read from the frame's metadata: a lookup and
/// an allocation per request that a server without security has no use for.
///
/// # Errors
/// A libzmq failure.
pub fn recv_envelope(router: &zmq::Socket, with_key: bool) -> Result<Option<Envelope>, zmq::Error> {
    let mut part = zmq::Message::new();
    match router.recv(&mut part, zmq::DONTWAIT) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN) => return Ok(None),
        Err(e) => return Err(e),
    }
    let route = part.to_vec();
    let mut frames = Vec::new();
    let mut peer_key = None;
    while router.get_rcvmore()? {
        let mut frame = zmq::Message::new();
        router.recv(&mut frame, 0)?;
        if with_key && peer_key.is_none() {
            peer_key = frame
                .gets("User-Id")
                .filter(|k| !k.is_empty())
                .map(str::to_string);
        }
        frames.push(frame);
    }
    Ok(Some(Envelope {
        route,
        frames,
        peer_key,
    }))
}

/// The descriptor of the TCP connection a received frame came over; `None` for inproc.
pub fn source_fd(frame: &mut zmq::Message) -> Option<i32> {
    // libzmq's private property behind the deprecated ZMQ_SRCFD.
    frame.gets("__fd").and_then(|fd| fd.parse().ok())
}

/// The IP address of the peer a received frame came from; `None` for inproc.
pub fn peer_address(frame: &mut zmq::Message) -> Option<String> {
    frame
        .gets("Peer-Address")
        .filter(|a| !a.is_empty())
        .map(str::to_string)
}

/// Whether a ROUTER still has a connection routed as `route` (a draft libzmq call, which the
/// vendored build has).
pub fn peer_connected(router: &mut zmq::Socket, route: &[u8]) -> bool {
    extern "C" {
        fn zmq_socket_get_peer_state(
            socket: *mut std::ffi::c_void,
            routing_id: *const std::ffi::c_void,
            routing_id_size: usize,
        ) -> std::ffi::c_int;
    }
    // SAFETY: the socket is live and used on this thread only; the id is read for its length.
    let state = unsafe {
        zmq_socket_get_peer_state(router.as_mut_ptr(), route.as_ptr().cast(), route.len())
    };
    state >= 0
}

/// The IP address of the peer of TCP connection `fd`; `None` if it has none (closed, not TCP).
pub fn fd_peer_address(fd: i32) -> Option<String> {
    // SAFETY: zeroed storage is a valid sockaddr_storage; the kernel writes at most `len`.
    let (storage, len) = unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let rc = libc::getpeername(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        );
        if rc != 0 {
            return None;
        }
        (storage, len as usize)
    };
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let v4 =
                unsafe { *(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)).to_string())
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let v6 = unsafe {
                *(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr).to_string())
        }
        _ => None,
    }
}

/// Closes TCP connection `fd` under libzmq's feet, which then sees it end and cleans up as for
/// any lost peer: the only way to close one connection of a ROUTER. The descriptor itself stays
/// libzmq's to close, so it cannot be reused meanwhile.
pub fn shut_down(fd: i32) {
    // SAFETY: shutdown touches only the connection; a bad fd is an error return.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// Messages queued per peer before a server stops sending to that peer (a slow reader then
/// misses pushes and repairs the gap from history, so the server's memory stays bounded).
pub const SERVER_SNDHWM: i32 = 10_000;
/// Messages queued inbound per peer before libzmq stops reading that peer's connection.
pub const SERVER_RCVHWM: i32 = 10_000;

/// How long a server waits for a new connection to finish its ZMTP (and CURVE) handshake before
/// closing it (libzmq's default is 30 s): a connection that never speaks holds a descriptor.
pub const SERVER_HANDSHAKE_MS: i32 = 5_000;

/// Raises this process's soft limit on open descriptors to its hard limit, so a server's
/// connections are bounded by its own caps rather than by a low default (often 1,024), past
/// which libzmq fails every accept. Returns the limit now in force.
///
/// # Errors
/// When the limit cannot be read or set.
pub fn raise_fd_limit() -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// This process's (soft) limit on open descriptors, if it has one.
pub fn fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Bytes libzmq reads from a server connection at a time (8 KiB by default). Its buffer is
/// kept per connection, and a group server's thousand members send little: PINGs, the odd
/// SEND; larger frames are read straight into their message. With 1,000 members this saves
/// 6 MiB for a few percent of peak fan-out and ingest. The send side's buffer is left at
/// 8 KiB: every push goes through it, and halving it would save 4 MiB more but cost fan-out
/// about a tenth.
pub const SERVER_IN_BATCH: i32 = 1024;

/// Polls, retrying when a signal interrupts the wait.
///
/// # Errors
/// Any libzmq failure but EINTR.
pub fn poll(items: &mut [zmq::PollItem], timeout: Duration) -> Result<usize> {
    let ms = timeout.as_millis().min(i64::MAX as u128) as i64;
    loop {
        match zmq::poll(items, ms) {
            Err(zmq::Error::EINTR) => continue,
            other => return Ok(other? as usize),
        }
    }
}

/// A routing id as hex, for logs.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_endpoints() {
        assert_eq!(endpoint("127.0.0.1:5555").unwrap(), "tcp://127.0.0.1:5555");
        assert_eq!(endpoint("tcp://host:1").unwrap(), "tcp://host:1");
        assert_eq!(endpoint(" 0.0.0.0:0 ").unwrap(), "tcp://0.0.0.0:*");
        assert!(endpoint("nohost").is_err());
        assert!(endpoint(":5555").is_err());
        assert!(endpoint("h:70000").is_err());
        assert_eq!(
            endpoints("a:1, b:2").unwrap(),
            vec!["tcp://a:1", "tcp://b:2"]
        );
        assert_eq!(address("tcp://a:1"), "a:1");
        assert_eq!(connectable("tcp://a:1").unwrap(), "a:1");
        assert!(connectable("a:0").is_err() && connectable("a:*").is_err());
    }

    #[test]
    fn bind_hosts_are_resolved_and_addresses_kept() {
        assert_eq!(
            resolve_bind("tcp://localhost:5555").unwrap(),
            "tcp://127.0.0.1:5555"
        );
        assert_eq!(
            resolve_bind("tcp://localhost:*").unwrap(),
            "tcp://127.0.0.1:*"
        );
        for kept in [
            "tcp://0.0.0.0:1",
            "tcp://*:2",
            "tcp://[::1]:3",
            "tcp://10.1.2.3:4",
        ] {
            assert_eq!(resolve_bind(kept).unwrap(), kept);
        }
    }
}

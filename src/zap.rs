//! The ZAP handler (ZeroMQ RFC 27): libzmq asks it about every CURVE handshake on a server
//! socket. It admits any client that proves it holds a key pair and names the connection by
//! the public key (Z85), which every message then carries as its "User-Id". Deciding what a key
//! may do is the servers' business, not this module's.

use crate::shutdown::ServerHandle;
use crate::{transport, Result};

/// Where libzmq looks for the handler, per context.
const ENDPOINT: &str = "inproc://zeromq.zap.01";

/// Starts the handler for `ctx`; `None` if one already runs in this context (one serves all
/// the servers of a process).
///
/// # Errors
/// A libzmq failure.
pub fn start(ctx: &zmq::Context) -> Result<Option<ServerHandle>> {
    let rep = transport::socket(ctx, zmq::REP)?;
    match rep.bind(ENDPOINT) {
        Ok(()) => {}
        Err(zmq::Error::EADDRINUSE) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let handle = ServerHandle::spawn(ctx, "zap", ENDPOINT.to_string(), move |control| loop {
        let mut items = [
            control.as_poll_item(zmq::POLLIN),
            rep.as_poll_item(zmq::POLLIN),
        ];
        transport::poll(&mut items, std::time::Duration::from_secs(3600))?;
        if items[0].is_readable() {
            // Now, not when libzmq's reaper gets to the socket: a server restarted in this
            // context binds the endpoint next, and must not find it taken by a handler on
            // its way out (it would then run with none, and name no peer).
            let _ = rep.unbind(ENDPOINT);
            return Ok(());
        }
        if items[1].is_readable() {
            let request = rep.recv_multipart(0)?;
            rep.send_multipart(answer(&request), 0)?;
        }
    })?;
    Ok(Some(handle))
}

/// The ZAP reply to one request: `[version, request id, status, text, user id, metadata]`.
fn answer(request: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let id = request.get(1).cloned().unwrap_or_default();
    let reply = |status: &str, text: &str, user: &str| {
        vec![
            b"1.0".to_vec(),
            id.clone(),
            status.into(),
            text.into(),
            user.into(),
            Vec::new(),
        ]
    };
    // [version, id, domain, address, identity, mechanism, credentials…]
    match request {
        [version, _, _, _, _, mechanism, key]
            if version == b"1.0" && mechanism == b"CURVE" && key.len() == 32 =>
        {
            match zmq::z85_encode(key) {
                Ok(user) => reply("200", "OK", &user),
                Err(_) => reply("500", "cannot encode the key", ""),
            }
        }
        _ => {
            tracing::warn!("ZAP: refused a handshake that is not CURVE");
            reply("400", "only CURVE is accepted", "")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_clients_are_named_by_their_key_and_others_refused() {
        let key = [7u8; 32];
        let request = |mechanism: &str, credentials: Vec<u8>| {
            vec![
                b"1.0".to_vec(),
                b"9".to_vec(),
                b"zms".to_vec(),
                b"1.2.3.4".to_vec(),
                vec![],
                mechanism.into(),
                credentials,
            ]
        };
        let ok = answer(&request("CURVE", key.to_vec()));
        assert_eq!(
            (ok[1].as_slice(), ok[2].as_slice()),
            (&b"9"[..], &b"200"[..])
        );
        assert_eq!(
            String::from_utf8(ok[4].clone()).unwrap(),
            zmq::z85_encode(&key).unwrap()
        );
        assert_eq!(answer(&request("PLAIN", b"x".to_vec()))[2], b"400");
        assert_eq!(answer(&[b"1.0".to_vec()])[2], b"400");
    }
}

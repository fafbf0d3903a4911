//! Just enough protobuf to read the two CRI messages the proxy looks at: `PullImageRequest`
//! (`image` = 1: ImageSpec, `auth` = 2: AuthConfig) and `RemoveImageRequest` (`image` =
//! 1), inside one gRPC length-prefixed frame. Field numbers are CRI v1's
//! (`runtime.v1`); unknown fields are skipped, as protobuf requires.

use credkeeper_core::Secret;

/// The credential a `PullImage` carried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub username: String,
    pub password: Option<Secret>,
    /// base64 `user:password`
    pub auth: Option<Secret>,
    pub server_address: String,
    pub identity_token: Option<Secret>,
    pub registry_token: Option<Secret>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct PullImage {
    pub image: String,
    pub auth: Option<AuthConfig>,
}

/// The message of a gRPC frame (uncompressed flag, 4-byte big-endian length); `None` for
/// a compressed or short frame.
pub fn grpc_message(frame: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = frame.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    rest.get(4..4 + len)
}

fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The length-delimited fields of a message, as (field number, bytes); other wire types
/// are skipped. `None` when the message is malformed.
fn fields(buf: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let key = varint(buf, &mut at)?;
        let (number, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(buf, &mut at)?;
            }
            1 => at = at.checked_add(8).filter(|&e| e <= buf.len())?,
            5 => at = at.checked_add(4).filter(|&e| e <= buf.len())?,
            2 => {
                let len = usize::try_from(varint(buf, &mut at)?).ok()?;
                let end = at.checked_add(len).filter(|&e| e <= buf.len())?;
                out.push((number, &buf[at..end]));
                at = end;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn string(bytes: &[u8]) -> Option<String> {
    String::from_utf8(bytes.to_vec()).ok()
}

fn secret(bytes: &[u8]) -> Option<Secret> {
    string(bytes).filter(|s| !s.is_empty()).map(Secret::new)
}

fn image_of(spec: &[u8]) -> Option<String> {
    fields(spec)?
        .into_iter()
        .find(|(n, _)| *n == 1)
        .and_then(|(_, b)| string(b))
}

/// Read a `PullImageRequest`.
pub fn pull_image(message: &[u8]) -> Option<PullImage> {
    let mut image = None;
    let mut auth = None;
    for (number, bytes) in fields(message)? {
        match number {
            1 => image = image_of(bytes),
            2 => {
                let mut a = AuthConfig::default();
                for (n, b) in fields(bytes)? {
                    match n {
                        1 => a.username = string(b)?,
                        2 => a.password = secret(b),
                        3 => a.auth = secret(b),
                        4 => a.server_address = string(b)?,
                        5 => a.identity_token = secret(b),
                        6 => a.registry_token = secret(b),
                        _ => {}
                    }
                }
                auth = Some(a);
            }
            _ => {}
        }
    }
    Some(PullImage {
        image: image?,
        auth,
    })
}

/// Read a `RemoveImageRequest`: the image it names.
pub fn remove_image(message: &[u8]) -> Option<String> {
    fields(message)?
        .into_iter()
        .find(|(n, _)| *n == 1)
        .and_then(|(_, b)| image_of(b))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn field(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3 | 2) as u8];
        let mut len = bytes.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(bytes);
        out
    }

    /// A PullImageRequest as kubelet encodes it.
    pub(crate) fn pull_request(image: &str, user: &str, pass: &str) -> Vec<u8> {
        let spec = field(1, image.as_bytes());
        let mut auth = field(1, user.as_bytes());
        auth.extend(field(2, pass.as_bytes()));
        auth.extend(field(4, b"http://registry.example"));
        let mut msg = field(1, &spec);
        msg.extend(field(2, &auth));
        // A varint field (an unknown one) to skip.
        msg.extend([0x18, 0x96, 0x01]);
        msg
    }

    pub(crate) fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend((message.len() as u32).to_be_bytes());
        out.extend(message);
        out
    }

    #[test]
    fn pull_and_remove_requests_are_read_as_kubelet_sends_them() {
        let frame = framed(&pull_request(
            "127.0.0.1:5000/test/hello:1",
            "robot",
            "s3cret",
        ));
        let pull = pull_image(grpc_message(&frame).unwrap()).unwrap();
        assert_eq!(pull.image, "127.0.0.1:5000/test/hello:1");
        let auth = pull.auth.unwrap();
        assert_eq!(auth.username, "robot");
        assert_eq!(auth.password.unwrap().expose(), "s3cret");
        assert_eq!(auth.server_address, "http://registry.example");
        let remove = field(1, &field(1, b"127.0.0.1:5000/test/hello:1"));
        assert_eq!(
            remove_image(&remove).unwrap(),
            "127.0.0.1:5000/test/hello:1"
        );
    }

    #[test]
    fn malformed_or_compressed_frames_are_not_read() {
        assert!(grpc_message(&[1, 0, 0, 0, 1, 0]).is_none(), "compressed");
        assert!(grpc_message(&[0, 0, 0, 0, 9, 1]).is_none(), "short");
        assert!(
            pull_image(&[0x0a, 0x20, 1]).is_none(),
            "length past the end"
        );
        assert!(pull_image(&[0x0f]).is_none(), "bad wire type");
        assert!(pull_image(&field(2, &field(1, b"u"))).is_none(), "no image");
    }
}

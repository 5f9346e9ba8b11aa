//! Wire encoding: protobuf by default, proto3 JSON when the message carries
//! `Content-Type: application/json`.

use async_nats::HeaderMap;
use bytes::Bytes;
use prost::Message;
use serde::de::DeserializeOwned;

/// Header naming the payload encoding.
pub const CONTENT_TYPE: &str = "Content-Type";
/// Protobuf payloads.
pub const PROTOBUF: &str = "application/x-protobuf";
/// Proto3-JSON payloads.
pub const JSON: &str = "application/json";

/// Why a payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not valid protobuf for the expected message.
    #[error("payload is not a valid protobuf {message}: {source}")]
    Protobuf {
        /// Expected message type.
        message: &'static str,
        /// Decoder error.
        source: prost::DecodeError,
    },
    /// Not valid proto3 JSON for the expected message.
    #[error("payload is not valid JSON for {message}: {source}")]
    Json {
        /// Expected message type.
        message: &'static str,
        /// Decoder error (names the field and position).
        source: serde_json::Error,
    },
    /// A content type we do not speak.
    #[error("unsupported Content-Type {0:?}; use application/x-protobuf (default) or application/json")]
    ContentType(String),
    /// Bigger than the configured maximum.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Payload size.
        size: usize,
        /// Limit.
        limit: usize,
    },
}

/// Payload encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Binary protobuf.
    Protobuf,
    /// Proto3 JSON.
    Json,
}

impl Encoding {
    /// The encoding announced by the headers (protobuf when absent).
    pub fn from_headers(headers: Option<&HeaderMap>) -> Result<Self, DecodeError> {
        let Some(ct) = headers.and_then(|h| h.get(CONTENT_TYPE)) else {
            return Ok(Encoding::Protobuf);
        };
        let ct = ct.as_str();
        let base = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match base.as_str() {
            "" | PROTOBUF | "application/protobuf" | "application/vnd.google.protobuf" => Ok(Encoding::Protobuf),
            JSON => Ok(Encoding::Json),
            _ => Err(DecodeError::ContentType(ct.to_string())),
        }
    }
}

/// Decodes `payload` as `M` in the encoding its headers announce.
pub fn decode<M>(headers: Option<&HeaderMap>, payload: &[u8]) -> Result<M, DecodeError>
where
    M: Message + Default + DeserializeOwned,
{
    let message = std::any::type_name::<M>().rsplit("::").next().unwrap_or("message");
    match Encoding::from_headers(headers)? {
        Encoding::Protobuf => M::decode(payload).map_err(|source| DecodeError::Protobuf { message, source }),
        Encoding::Json => serde_json::from_slice(payload).map_err(|source| DecodeError::Json { message, source }),
    }
}

/// Encodes `msg` as protobuf.
pub fn encode<M: Message>(msg: &M) -> Bytes {
    Bytes::from(msg.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwsched_proto::v1::TaskRequest;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, "application/json; charset=utf-8");
        h
    }

    #[test]
    fn protobuf_is_the_default() {
        let t = TaskRequest { task_id: "a".into(), ..Default::default() };
        let back: TaskRequest = decode(None, &encode(&t)).expect("decode");
        assert_eq!(back.task_id, "a");
    }

    #[test]
    fn json_when_header_says_so() {
        let back: TaskRequest = decode(Some(&json_headers()), br#"{"task_id":"b","command":["true"]}"#).expect("json");
        assert_eq!(back.task_id, "b");
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        assert!(decode::<TaskRequest>(None, &[0xff, 0xff, 0xff]).is_err());
        let err = decode::<TaskRequest>(Some(&json_headers()), b"{not json").expect_err("bad json");
        assert!(err.to_string().contains("TaskRequest"), "{err}");
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, "text/xml");
        assert!(matches!(decode::<TaskRequest>(Some(&h), b"<x/>"), Err(DecodeError::ContentType(_))));
    }
}

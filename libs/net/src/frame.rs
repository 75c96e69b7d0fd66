//! Length-prefixed protobuf frames on QUIC streams: a 4-byte big-endian
//! length, then that many bytes of one message. Lengths above the reader's
//! limit are refused before anything is allocated. Every read from a peer
//! has a timeout ([`READ_TIMEOUT`]): a whole frame must arrive within it,
//! and a payload read must make progress within it, so a silent peer holds
//! a stream for a bounded time only.

use std::time::Duration;

use prost::Message;
use quinn::{RecvStream, SendStream};

/// How long a peer may take to send one whole frame, or the next bytes of
/// a payload, before the read fails with [`FrameError::TimedOut`].
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest frame either side reads (a payload never travels in a frame).
pub const MAX_FRAME: usize = 256 * 1024;

/// A frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream ended before a whole frame.
    #[error("the peer closed the stream mid-message")]
    Truncated,
    /// The declared length is over the limit.
    #[error("a message of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not the expected protobuf message.
    #[error("a malformed message: {0}")]
    Decode(String),
    /// The stream or connection failed.
    #[error("the connection failed: {0}")]
    Io(String),
    /// The peer sent nothing for too long.
    #[error("the peer sent nothing for {} s", .0.as_secs())]
    TimedOut(Duration),
}

/// Writes `msg` as one frame.
pub async fn write_frame<M: Message>(send: &mut SendStream, msg: &M) -> Result<(), FrameError> {
    let body = msg.encode_to_vec();
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge {
        len: body.len(),
        max: MAX_FRAME,
    })?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    send.write_all(&out)
        .await
        .map_err(|e| FrameError::Io(e.to_string()))
}

/// Reads one frame of at most `max` bytes and decodes it as `M`, within
/// [`READ_TIMEOUT`].
pub async fn read_frame<M: Message + Default>(
    recv: &mut RecvStream,
    max: usize,
) -> Result<M, FrameError> {
    read_frame_within(recv, max, READ_TIMEOUT).await
}

/// [`read_frame`] with another timeout for the whole frame.
pub async fn read_frame_within<M: Message + Default>(
    recv: &mut RecvStream,
    max: usize,
    within: Duration,
) -> Result<M, FrameError> {
    tokio::time::timeout(within, read_frame_now(recv, max))
        .await
        .map_err(|_| FrameError::TimedOut(within))?
}

async fn read_frame_now<M: Message + Default>(
    recv: &mut RecvStream,
    max: usize,
) -> Result<M, FrameError> {
    let mut len = [0u8; 4];
    read_exact(recv, &mut len).await?;
    let len = body_len(len, max)?;
    let mut body = vec![0u8; len];
    read_exact(recv, &mut body).await?;
    M::decode(body.as_slice()).map_err(|e| FrameError::Decode(e.to_string()))
}

/// The body length a frame's prefix declares, if at most `max`.
fn body_len(prefix: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes the frame at the start of `buf` with the checks [`read_frame`]
/// makes on a stream (for tests and fuzzing: a peer's bytes either way).
pub fn decode_frame<M: Message + Default>(buf: &[u8], max: usize) -> Result<M, FrameError> {
    let (prefix, rest) = buf.split_first_chunk::<4>().ok_or(FrameError::Truncated)?;
    let len = body_len(*prefix, max)?;
    let body = rest.get(..len).ok_or(FrameError::Truncated)?;
    M::decode(body).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Fills `buf` from the stream.
pub async fn read_exact(recv: &mut RecvStream, buf: &mut [u8]) -> Result<(), FrameError> {
    recv.read_exact(buf).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => FrameError::Truncated,
        quinn::ReadExactError::ReadError(e) => FrameError::Io(e.to_string()),
    })
}

/// Reads up to `buf.len()` bytes; 0 means the stream ended. Fails when
/// nothing arrives within [`READ_TIMEOUT`].
pub async fn read_some(recv: &mut RecvStream, buf: &mut [u8]) -> Result<usize, FrameError> {
    match tokio::time::timeout(READ_TIMEOUT, recv.read(buf)).await {
        Ok(Ok(Some(n))) => Ok(n),
        Ok(Ok(None)) => Ok(0),
        Ok(Err(e)) => Err(FrameError::Io(e.to_string())),
        Err(_) => Err(FrameError::TimedOut(READ_TIMEOUT)),
    }
}

/// At most `max` bytes of what `recv` has received, in order, as QUIC's
/// own buffer (no copy), within [`READ_TIMEOUT`]; `None` at the end of the
/// stream.
pub async fn read_chunk(
    recv: &mut RecvStream,
    max: usize,
) -> Result<Option<bytes::Bytes>, FrameError> {
    match tokio::time::timeout(READ_TIMEOUT, recv.read_chunk(max, true)).await {
        Ok(Ok(Some(chunk))) => Ok(Some(chunk.bytes)),
        Ok(Ok(None)) => Ok(None),
        Ok(Err(e)) => Err(FrameError::Io(e.to_string())),
        Err(_) => Err(FrameError::TimedOut(READ_TIMEOUT)),
    }
}

/// Appends at most `max` bytes of what `recv` has received to `data`,
/// straight from QUIC's own buffer (no copy through a scratch buffer),
/// within [`READ_TIMEOUT`]. Returns how many; 0 at the end of the stream.
pub async fn read_append(
    recv: &mut RecvStream,
    data: &mut Vec<u8>,
    max: usize,
) -> Result<usize, FrameError> {
    match tokio::time::timeout(READ_TIMEOUT, recv.read_chunk(max, true)).await {
        Ok(Ok(Some(chunk))) => {
            data.extend_from_slice(&chunk.bytes);
            Ok(chunk.bytes.len())
        }
        Ok(Ok(None)) => Ok(0),
        Ok(Err(e)) => Err(FrameError::Io(e.to_string())),
        Err(_) => Err(FrameError::TimedOut(READ_TIMEOUT)),
    }
}

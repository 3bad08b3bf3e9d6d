//! `tcp`: connect; optionally send bytes, then wait for expected bytes in the answer.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{connect, contains_from, shown, CheckError, MAX_READ};

/// Connects to `host:port`, sends `send`, then reads until `expect` appears in the first
/// [`MAX_READ`] bytes received.
pub async fn run(
    host: &str,
    port: u16,
    send: Option<&[u8]>,
    expect: Option<&[u8]>,
) -> Result<(), CheckError> {
    let mut stream = connect(host, port).await?;
    if let Some(bytes) = send {
        stream.write_all(bytes).await.map_err(|e| CheckError::Io {
            op: "send",
            reason: e.to_string(),
        })?;
    }
    let Some(expect) = expect else {
        return Ok(());
    };
    let mut received = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    while received.len() < MAX_READ {
        let want = chunk.len().min(MAX_READ - received.len());
        let n = stream
            .read(&mut chunk[..want])
            .await
            .map_err(|e| CheckError::Io {
                op: "read",
                reason: e.to_string(),
            })?;
        if n == 0 {
            return Err(expect_error(expect, &received, true));
        }
        let from = received.len();
        received.extend_from_slice(&chunk[..n]);
        if contains_from(&received, expect, from) {
            return Ok(());
        }
    }
    Err(expect_error(expect, &received, false))
}

fn expect_error(expect: &[u8], received: &[u8], closed: bool) -> CheckError {
    CheckError::Expect {
        expected: shown(expect),
        received: shown(received),
        closed,
    }
}

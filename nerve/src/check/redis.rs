//! `redis`: optional `AUTH [username] password` answered `+OK`, then `PING` answered
//! `+PONG` (RESP, one connection per run).

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{connect, shown, CheckError, MAX_READ};

/// Runs `AUTH` (when a password is set) and `PING` against `host:port`.
pub async fn run(
    host: &str,
    port: u16,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<(), CheckError> {
    let mut stream = BufReader::new(connect(host, port).await?);
    if let Some(password) = password {
        let mut args = vec!["AUTH"];
        args.extend(username);
        args.push(password);
        let reply = command(&mut stream, &args).await?;
        if reply != "+OK" {
            return Err(CheckError::Redis {
                command: "AUTH",
                reply: shown(reply.as_bytes()),
            });
        }
    }
    let reply = command(&mut stream, &["PING"]).await?;
    if reply == "+PONG" {
        Ok(())
    } else {
        Err(CheckError::Redis {
            command: "PING",
            reply: shown(reply.as_bytes()),
        })
    }
}

/// Sends `args` as a RESP array of bulk strings and reads a one-line reply (`+OK`,
/// `-ERR ...`), without its CRLF.
async fn command(stream: &mut BufReader<TcpStream>, args: &[&str]) -> Result<String, CheckError> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    stream
        .get_mut()
        .write_all(&out)
        .await
        .map_err(|e| CheckError::Io {
            op: "send",
            reason: e.to_string(),
        })?;
    let mut line = Vec::new();
    // A simple-string or error reply is one line; a server that sends more is not Redis.
    let mut limited = (&mut *stream).take(MAX_READ as u64);
    let n = limited
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| CheckError::Io {
            op: "read",
            reason: e.to_string(),
        })?;
    if n == 0 {
        return Err(CheckError::Io {
            op: "read",
            reason: "connection closed before a reply".to_string(),
        });
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

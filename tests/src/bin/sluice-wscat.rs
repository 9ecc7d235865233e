//! `sluice-wscat URL`: a minimal WebSocket client for trying Sluice by hand. Lines typed
//! on stdin are sent as text messages; messages received are printed.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: sluice-wscat ws://HOST:PORT/PATH"))?;
    let (ws, resp) = tokio_tungstenite::connect_async(&url).await?;
    eprintln!(
        "connected: {} (type a line to send it; Ctrl-D to close)",
        resp.status()
    );
    let (mut tx, mut rx) = ws.split();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut input_done = false;
    loop {
        tokio::select! {
            line = lines.next_line(), if !input_done => match line? {
                Some(l) => tx.send(Message::text(l)).await?,
                None => {
                    // End of input: close, but keep printing what is still on its way.
                    tx.send(Message::Close(None)).await?;
                    input_done = true;
                }
            },
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => println!("< {t}"),
                Some(Ok(Message::Binary(b))) => println!("< [{} bytes]", b.len()),
                Some(Ok(Message::Close(c))) => {
                    eprintln!("closed by peer: {c:?}");
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => break,
            }
        }
    }
    Ok(())
}

//! `onecity log ...`: read the log over gRPC (`tail`, `verify`), or move a whole log between
//! backends (`export`, `import`, `checksum`, see [`crate::migrate`]).

use anyhow::{bail, Context as _};
use onecity_eventlog::chain::{Intact, Verifier};
use onecity_eventlog::RecordedEvent;
use onecity_proto::v1 as pb;

use super::client::Client;
use super::output::emit;
use super::LogCommand;
use crate::json;

/// Runs one `onecity log` command.
pub(super) async fn run(command: LogCommand) -> anyhow::Result<()> {
    match command {
        LogCommand::Tail {
            client,
            from,
            lines,
            follow,
        } => {
            let c = Client::connect(&client).await?;
            log_tail(&c, from, lines, follow).await
        }
        LogCommand::Verify { client } => {
            let c = Client::connect(&client).await?;
            let intact = log_verify(&c).await?;
            emit(&crate::migrate::describe_intact(&intact))
        }
        LogCommand::Export {
            log,
            log_token,
            tls,
            file,
        } => {
            let (log, _) =
                crate::server::open_log_spec(&log, log_token.as_deref(), &tls.files()).await?;
            let sum = crate::migrate::export(log.as_ref(), &file).await?;
            emit(&format!(
                "exported {} events to {}\nchecksum {}",
                sum.events,
                file.display(),
                sum.hex()
            ))
        }
        LogCommand::Import {
            log,
            log_token,
            tls,
            file,
        } => {
            let (log, _) =
                crate::server::open_log_spec(&log, log_token.as_deref(), &tls.files()).await?;
            let (sum, chain) = crate::migrate::import(log.as_ref(), &file).await?;
            emit(&format!(
                "imported {} events from {}\nchecksum {} (verified)\nfile's hash chain {}",
                sum.events,
                file.display(),
                sum.hex(),
                crate::migrate::describe_intact(&chain)
            ))
        }
        LogCommand::Checksum {
            log,
            log_token,
            tls,
        } => {
            let (log, _) =
                crate::server::open_log_spec(&log, log_token.as_deref(), &tls.files()).await?;
            let sum = crate::migrate::checksum(log.as_ref()).await?;
            emit(&format!("{} events\nchecksum {}", sum.events, sum.hex()))
        }
    }
}

/// ReadAll from a position up to the head at the start (or Subscribe with `follow`).
async fn log_tail(c: &Client, from: Option<u64>, lines: u64, follow: bool) -> anyhow::Result<()> {
    let mut log = c.event_log();
    let head = log
        .get_head(c.request(pb::GetHeadRequest {}))
        .await?
        .into_inner()
        .position;
    let from = from.unwrap_or_else(|| head.saturating_sub(lines.saturating_sub(1)).max(1));
    let show = |event: &pb::RecordedEvent| -> anyhow::Result<()> {
        emit(&json::pretty(&json::recorded_event_to_value(event)?))
    };
    if follow {
        let mut stream = log
            .subscribe(c.request(pb::SubscribeRequest {
                from_position: from,
                event_type_prefixes: Vec::new(),
            }))
            .await?
            .into_inner();
        while let Some(msg) = stream.message().await? {
            if let Some(event) = &msg.event {
                show(event)?;
            }
        }
        return Ok(());
    }
    read_up_to(c, from, head, |event| show(&event)).await
}

/// Hands `each` every event from position `from` up to `head` (a head read before, so a
/// log that keeps growing still ends the read), page by page.
async fn read_up_to(
    c: &Client,
    from: u64,
    head: u64,
    mut each: impl FnMut(pb::RecordedEvent) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut log = c.event_log();
    let mut next = from;
    while next <= head {
        let events = log
            .read_all(c.request(pb::ReadAllRequest {
                from_position: next,
                limit: 0,
            }))
            .await?
            .into_inner()
            .events;
        let Some(last) = events.last().map(|e| e.position) else {
            break;
        };
        for event in events.into_iter().filter(|e| e.position <= head) {
            each(event)?;
        }
        next = last + 1;
    }
    Ok(())
}

/// Reads the log from position 1 up to the head at the start and recomputes its chain.
async fn log_verify(c: &Client) -> anyhow::Result<Intact> {
    let mut log = c.event_log();
    let head = log
        .get_head(c.request(pb::GetHeadRequest {}))
        .await?
        .into_inner()
        .position;
    let mut verifier = Verifier::new();
    read_up_to(c, 1, head, |event| {
        let position = event.position;
        let event = RecordedEvent::try_from(event)
            .with_context(|| format!("chain broken at position {position}: undecodable event"))?;
        Ok(verifier.push(event)?)
    })
    .await?;
    let intact = verifier.finish()?;
    if intact.head != head {
        bail!(
            "chain broken at position {}: the log's head is {head} but reading stopped there",
            intact.head + 1
        );
    }
    Ok(intact)
}

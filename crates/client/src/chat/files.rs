//! Files in the chat: `/send` runs an [`upload`] beside the
//! conversation and reports how it goes, and an attachment in a message is
//! shown as its name, its size and where to fetch it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use super::escape;
use crate::Trust;
use crate::protocol::Attachment;
use crate::upload::{self, Progress, Ticket, Uploaded, WebBase, human_size};

/// How an upload goes, reported to the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// Another whole percent of the file was sent.
    Progress { name: String, percent: u64 },
    /// The server stored the file (post it with `caption`), or why not.
    Done {
        name: String,
        caption: String,
        result: Result<Uploaded, String>,
    },
}

/// A `/send` to run.
#[derive(Debug, Clone)]
pub struct Job {
    pub path: PathBuf,
    pub caption: String,
    pub web: WebBase,
    pub trust: Trust,
    pub ticket: Ticket,
}

/// Runs `job` in a task of its own, so the conversation goes on meanwhile;
/// its progress and its end come on `report`.
pub fn start(job: Job, report: mpsc::Sender<Transfer>) {
    tokio::spawn(async move {
        let name = upload::file_name(&job.path);
        let last = Arc::new(AtomicU64::new(u64::MAX));
        let progress = {
            let (report, name, last) = (report.clone(), name.clone(), last.clone());
            move |p: Progress| {
                let percent = p.percent();
                // One report per whole percent; a full channel skips one.
                if last.swap(percent, Ordering::Relaxed) != percent {
                    let _ = report.try_send(Transfer::Progress {
                        name: name.clone(),
                        percent,
                    });
                }
            }
        };
        let result = upload::upload(&job.web, &job.trust, &job.ticket, &job.path, progress)
            .await
            .map_err(|e| e.to_string());
        let _ = report
            .send(Transfer::Done {
                name,
                caption: job.caption,
                result,
            })
            .await;
    });
}

/// An attachment as shown, escaped: `📎 NAME (SIZE) URL`, the URL on the
/// web listener when it is known.
pub fn describe(attachment: &Attachment<'_>, web: Option<&WebBase>) -> String {
    let url = match web {
        Some(web) => web.url(&attachment.url),
        None => attachment.url.to_string(),
    };
    format!(
        "📎 {} ({}) {}",
        escape::text(&attachment.name),
        human_size(attachment.size),
        escape::text(&url)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attachment_shows_its_name_size_and_full_url() {
        let web = WebBase::parse("http://127.0.0.1:7880").unwrap();
        let attachment = Attachment {
            url: "/files/0123456789abcdef0123456789abcdef".into(),
            name: "notes\n[12:00] <admin>.txt".into(),
            size: 1536,
            mime: "text/plain".into(),
        };
        assert_eq!(
            describe(&attachment, Some(&web)),
            "📎 notes\\n[12:00] <admin>.txt (1.5 KiB) http://127.0.0.1:7880/files/0123456789abcdef0123456789abcdef"
        );
        assert_eq!(
            describe(&attachment, None),
            "📎 notes\\n[12:00] <admin>.txt (1.5 KiB) /files/0123456789abcdef0123456789abcdef"
        );
    }
}

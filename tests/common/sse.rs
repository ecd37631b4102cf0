//! Reading a Server-Sent Events stream in tests.

use serde_json::Value;

use crate::DEADLINE;

/// One SSE message: its name, id and data (comments are kept apart).
#[derive(Debug)]
pub struct Message {
    /// The event name (`put`, `progress`, `record_set`...).
    pub event: String,
    /// The resume cursor.
    pub id: String,
    /// The data, parsed.
    pub data: Value,
}

/// Reads an SSE response incrementally.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
    /// The comments seen so far (heartbeats).
    pub comments: Vec<String>,
}

impl SseReader {
    /// Reads `response` (a `text/event-stream`).
    pub fn new(response: reqwest::Response) -> SseReader {
        SseReader {
            response,
            buffer: String::new(),
            comments: Vec::new(),
        }
    }

    /// The next message (skipping comments, which are recorded).
    pub async fn next(&mut self) -> Message {
        loop {
            if let Some(message) = self.parse_block() {
                return message;
            }
            self.read_chunk().await;
        }
    }

    /// The next message that is a change (skipping progress).
    pub async fn next_change(&mut self) -> Message {
        loop {
            let message = self.next().await;
            if message.event != "progress" {
                return message;
            }
        }
    }

    /// Reads until at least one comment was seen (messages read meanwhile are dropped).
    pub async fn wait_comment(&mut self) {
        while self.comments.is_empty() {
            if self.parse_block().is_none() && !self.buffer.contains("\n\n") {
                self.read_chunk().await;
            }
        }
    }

    /// Takes one complete block off the buffer: `Some` for a message, `None` for a comment
    /// or an incomplete block.
    fn parse_block(&mut self) -> Option<Message> {
        let end = self.buffer.find("\n\n")?;
        let block: String = self.buffer.drain(..end + 2).collect();
        let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
        for line in block.lines() {
            if let Some(comment) = line.strip_prefix(':') {
                self.comments.push(comment.trim().to_string());
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim());
            }
        }
        if event.is_empty() && data.is_empty() {
            return None;
        }
        let data = serde_json::from_str(&data).expect("data is JSON");
        Some(Message { event, id, data })
    }

    async fn read_chunk(&mut self) {
        let chunk = tokio::time::timeout(DEADLINE, self.response.chunk())
            .await
            .expect("the stream sends within the deadline")
            .expect("the stream is readable")
            .expect("the stream stays open");
        self.buffer
            .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
    }
}

//! Real IRC clients against linechat: irssi (driven under tmux, `send-keys` and
//! `capture-pane`) and WeeChat headless (driven through its FIFO, read through its logger)
//! connect to the IRC listener, join `#lobby` and chat with a netcat user there, both ways,
//! messages and `/me` actions (CTCP ACTION), and quit. Each test starts its own linechat binary
//! on 127.0.0.1 ports the kernel picks.
//!
//! Every wait is bounded ([`harness::WAIT`]) and fails saying what it waited for and what was
//! seen: the client's screen or logs, what the netcat user received, the server's log. Every
//! process a test starts is killed by PID when the test ends, pass or fail; each client gets
//! a temporary `HOME`. A missing client (`scripts/test-deps.sh` installs irssi, tmux,
//! weechat-headless and weechat-plugins) skips its test with `SKIPPED …: needs …` outside CI
//! and fails it in CI (`CI` set).

#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

mod harness;
mod irssi;
mod weechat;

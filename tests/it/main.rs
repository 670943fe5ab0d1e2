//! Integration tests: each module drives a real server over real sockets on 127.0.0.1.

mod support;

mod abuse;
mod accounts;
mod binary;
mod chat;
mod commands;
mod docs;
mod framing;
mod irc;
mod limits;
mod moderation;
mod monitoring;
mod netcat;
mod opers;
mod props;
mod reload;
mod rooms;
mod service;
mod shutdown;
mod store;
mod timers;
mod tls;
mod transcript;
mod web;

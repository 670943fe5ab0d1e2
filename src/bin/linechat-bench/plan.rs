//! The one place that picks the protocols of a run from `--proto`. It sits above the protocol
//! modules, which know only the [`Protocol`] trait, so the imports run one way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::ValueEnum;
use tokio_rustls::rustls::ClientConfig;

use crate::proto::{Protocol, Setup};
use crate::ws::Ws;
use crate::{irc, line, nats, redis};

/// What `--proto` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtoArg {
    /// linechat's line protocol (what netcat speaks).
    #[value(alias = "line")]
    Linechat,
    Nats,
    Redis,
    /// IRC: NICK/USER, JOIN #room, PRIVMSG #room.
    Irc,
    /// Half the clients on the line protocol at --addr, half IRC at --irc-addr, one room.
    Mixed,
    /// The line protocol over WebSocket to linechat's http:// listener at --addr.
    WsLine,
    /// IRC over WebSocket (text.ircv3.net) to linechat's http:// listener at --addr.
    WsIrc,
}

impl ProtoArg {
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// Where client i connects and what it speaks.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub proto: Arc<dyn Protocol>,
    pub addr: SocketAddr,
    /// `--tls`: connect over TLS with this configuration.
    pub tls: Option<Arc<ClientConfig>>,
}

/// The protocols of a run: client i uses `endpoints[i % endpoints.len()]`, so in a mixed run
/// the senders (the first clients) are split between the protocols too, and on a cluster
/// between the nodes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub endpoints: Vec<Endpoint>,
    pub expected_definition: &'static str,
    /// Cluster nodes the clients are spread over (1: one server); endpoint i is node i.
    pub nodes: usize,
}

impl Plan {
    /// The constructor: the only place that looks at which protocol was asked for.
    pub fn new(
        arg: ProtoArg,
        addrs: &[SocketAddr],
        irc_addr: Option<SocketAddr>,
        tls: Option<Arc<ClientConfig>>,
        s: &Setup,
    ) -> Result<Plan> {
        let addr = *addrs.first().ok_or_else(|| anyhow!("no --addr"))?;
        if addrs.len() > 1 {
            if arg != ProtoArg::Linechat {
                return Err(anyhow!(
                    "several --addr (a cluster's nodes) need --proto linechat, the one protocol a cluster serves"
                ));
            }
            let proto: Arc<dyn Protocol> = Arc::new(line::Line::new(s));
            return Ok(Plan {
                name: format!("linechat cluster of {}", addrs.len()),
                endpoints: addrs
                    .iter()
                    .map(|&addr| Endpoint {
                        proto: proto.clone(),
                        addr,
                        tls: tls.clone(),
                    })
                    .collect(),
                expected_definition: "each message to every other client (N-1) on every node: client i is on node i mod the node count, and no node echoes to the sender",
                nodes: addrs.len(),
            });
        }
        let one = |proto: Arc<dyn Protocol>| {
            vec![Endpoint {
                proto,
                addr,
                tls: tls.clone(),
            }]
        };
        let (endpoints, expected_definition) = match arg {
            ProtoArg::Linechat => (
                one(Arc::new(line::Line::new(s))),
                "each message to every other client (N-1): linechat does not echo to the sender",
            ),
            ProtoArg::Nats => (
                one(Arc::new(nats::Nats::new(s))),
                "each message to every other client (N-1): every client subscribes to one subject and publishes on its own connection with echo:false",
            ),
            ProtoArg::Redis => (
                one(Arc::new(redis::Redis::new(s))),
                "each message to every other client (N-1): every client subscribes to one channel; senders publish on separate publisher connections and their own subscriber's copy is discarded (self_deliveries)",
            ),
            ProtoArg::Irc => (
                one(Arc::new(irc::Irc::new(s))),
                "each message to every other client (N-1): every client joins one channel, and IRC does not echo a PRIVMSG to its sender",
            ),
            ProtoArg::WsLine => (
                one(Arc::new(Ws::new("ws-line", Arc::new(line::Line::new(s)), None))),
                "each message to every other client (N-1): the line protocol over WebSocket, one message per line; linechat does not echo to the sender",
            ),
            ProtoArg::WsIrc => (
                one(Arc::new(Ws::new(
                    "ws-irc",
                    Arc::new(irc::Irc::new(s)),
                    Some("text.ircv3.net"),
                ))),
                "each message to every other client (N-1): IRC over WebSocket (text.ircv3.net), one message per line; no echo to the sender",
            ),
            ProtoArg::Mixed => {
                let irc_addr = irc_addr
                    .ok_or_else(|| anyhow!("--proto mixed needs --irc-addr (the IRC listener)"))?;
                (
                    vec![
                        Endpoint {
                            proto: Arc::new(line::Line::new(s)),
                            addr,
                            tls: tls.clone(),
                        },
                        Endpoint {
                            proto: Arc::new(irc::Irc::new(s)),
                            addr: irc_addr,
                            tls: tls.clone(),
                        },
                    ],
                    "each message to every other client (N-1): even clients speak the line protocol at --addr, odd ones IRC at --irc-addr, all in one room; neither side echoes to the sender",
                )
            }
        };
        Ok(Plan {
            name: arg.name(),
            endpoints,
            expected_definition,
            nodes: 1,
        })
    }

    pub fn endpoint(&self, idx: usize) -> &Endpoint {
        &self.endpoints[idx % self.endpoints.len()]
    }

    pub fn separate_publishers(&self) -> bool {
        self.endpoints.iter().any(|e| e.proto.separate_publishers())
    }

    pub fn settle_quiet(&self) -> Duration {
        self.endpoints
            .iter()
            .map(|e| e.proto.settle_quiet())
            .max()
            .unwrap_or_default()
    }

    pub fn rate_hint(&self) -> String {
        self.endpoints.iter().map(|e| e.proto.rate_hint()).collect()
    }

    pub fn check(&self, clients: usize) -> Result<()> {
        self.endpoints
            .iter()
            .try_for_each(|e| e.proto.check(clients))
    }

    pub fn warnings(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .flat_map(|e| e.proto.warnings())
            .collect()
    }

    /// `addr` or `addr + irc_addr`, for the report.
    pub fn addrs(&self) -> String {
        let v: Vec<String> = self.endpoints.iter().map(|e| e.addr.to_string()).collect();
        v.join(" + ")
    }
}

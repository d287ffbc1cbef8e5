//! The remote-workers Bots API (`google.devtools.remoteworkers.v1test2`), as BuildGrid serves
//! it: a bot opens a session, then keeps calling UpdateBotSession with every lease it holds,
//! which is both its heartbeat and how it hands results back.
//!
//! These types come from another generated crate than the REAPI ones (their `Any` is
//! `prost_types::Any`), so messages cross between the two as bytes.

use std::time::Duration;

use googleapis_tonic_google_devtools_remoteworkers_v1test2::google::devtools::remoteworkers::v1test2 as rw;

pub use rw::{BotSession, BotStatus, Lease, LeaseState};

use crate::client::Transport;
use crate::{Client, Error};

/// A bot's connection to the scheduler.
pub struct Bots {
    client: Client,
    bots: rw::bots_client::BotsClient<Transport>,
}

/// The type URL of a message inside an `Any`.
pub fn type_url(full_name: &str) -> String {
    format!("type.googleapis.com/{full_name}")
}

impl Bots {
    pub fn new(client: &Client) -> Bots {
        Bots {
            client: client.clone(),
            bots: rw::bots_client::BotsClient::new(client.transport()),
        }
    }

    /// Open a session for `bot_id` whose primary device has these properties (`OSFamily`,
    /// `ISA`, …), able to hold `capacity` leases at once.
    pub fn create(
        &mut self,
        bot_id: &str,
        properties: &[(&str, &str)],
        capacity: usize,
        deadline: Duration,
    ) -> Result<BotSession, Error> {
        let device = rw::Device {
            handle: format!("{bot_id}-device"),
            properties: properties
                .iter()
                .map(|(k, v)| rw::device::Property {
                    key: (*k).to_string(),
                    value: (*v).to_string(),
                })
                .collect(),
        };
        let session = BotSession {
            bot_id: bot_id.to_string(),
            status: BotStatus::Ok as i32,
            worker: Some(rw::Worker {
                devices: vec![device],
                configs: vec![rw::worker::Config {
                    key: "capacity".into(),
                    value: capacity.to_string(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut req = tonic::Request::new(rw::CreateBotSessionRequest {
            parent: self.client.instance().to_string(),
            bot_session: Some(session),
        });
        req.set_timeout(deadline);
        let server = self.client.server().to_string();
        let bots = &mut self.bots;
        self.client
            .block_on(bots.create_bot_session(req))
            .map(tonic::Response::into_inner)
            .map_err(|s| Error::call(&server, "CreateBotSession", &s))
    }

    /// Send the session (its status and every lease it holds) and get back the server's view:
    /// new leases, and without those it took away. The server may hold the call open for up to
    /// about 0.8 × `deadline` while it waits for work; when `stop` is set meanwhile, the call is
    /// abandoned (an `Aborted` error) so that a worker asked to leave does not wait for it.
    pub fn update(
        &mut self,
        session: &BotSession,
        deadline: Duration,
        stop: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<BotSession, Error> {
        let mut req = tonic::Request::new(rw::UpdateBotSessionRequest {
            name: session.name.clone(),
            bot_session: Some(session.clone()),
            update_mask: None,
        });
        req.set_timeout(deadline);
        let server = self.client.server().to_string();
        let bots = &mut self.bots;
        self.client.block_on(async {
            let mut call = std::pin::pin!(bots.update_bot_session(req));
            loop {
                match tokio::time::timeout(Duration::from_millis(200), &mut call).await {
                    Ok(r) => {
                        return r
                            .map(tonic::Response::into_inner)
                            .map_err(|s| Error::call(&server, "UpdateBotSession", &s));
                    }
                    Err(_)
                        if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) =>
                    {
                        return Err(Error::Call {
                            server: server.clone(),
                            call: "UpdateBotSession",
                            code: tonic::Code::Aborted,
                            message: "the worker is stopping".into(),
                        });
                    }
                    Err(_) => {}
                }
            }
        })
    }
}

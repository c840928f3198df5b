//! Raft over the brokers' HTTP ports: `POST /raft/{append,vote,snapshot}?topic=T&to=ID` and
//! `POST /raft/propose?topic=T`, bodies and answers postcard-encoded. `to` names the node the
//! RPC is for; a broker that is another node now answers 404, like one that is down.
//!
//! The client side is [`HttpNetworkFactory`] (one per group, handing openraft an
//! [`HttpNetwork`] per peer, all sharing one reqwest client); the server side is [`router`],
//! which brokerd merges into its HTTP router, finding a topic's group through [`Groups`].
//! `propose` is how a follower hands a publish to the leader: it answers once the entry is
//! committed and applied there.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use openraft::error::{
    ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Applied, Command, Node, NodeId, Raft, TypeConfig};

/// Where the server finds a topic's group.
pub trait Groups: Send + Sync + 'static {
    /// The group of `topic`, if this broker holds a replica of it.
    fn group(&self, topic: &str) -> Option<Raft>;
}

/// Makes the per-peer clients of one group.
#[derive(Debug, Clone)]
pub struct HttpNetworkFactory {
    client: reqwest::Client,
    topic: String,
}

impl HttpNetworkFactory {
    /// Clients for `topic`'s group, over `client`.
    pub fn new(client: reqwest::Client, topic: &str) -> HttpNetworkFactory {
        HttpNetworkFactory {
            client,
            topic: topic.to_string(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetworkFactory {
    type Network = HttpNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> HttpNetwork {
        HttpNetwork {
            client: self.client.clone(),
            topic: self.topic.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// One group's client for one peer.
#[derive(Debug)]
pub struct HttpNetwork {
    client: reqwest::Client,
    topic: String,
    target: NodeId,
    addr: String,
}

/// Why a call to a peer failed before it could answer.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// Nothing answered (refused, reset, timed out): back off.
    #[error("{0}")]
    Unreachable(String),
    /// It answered, but not with an answer of this call.
    #[error("{0}")]
    Network(String),
}

impl<E: std::error::Error> From<CallError> for RPCError<NodeId, Node, E> {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(_) => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

/// Sends `body` to `http://addr/raft/<rpc>?topic=T[&to=ID]` and decodes the answer.
async fn call<Req: Serialize, Resp: DeserializeOwned>(
    client: &reqwest::Client,
    addr: &str,
    rpc: &str,
    (topic, to): (&str, Option<NodeId>),
    body: &Req,
    ttl: Option<Duration>,
) -> Result<Resp, CallError> {
    let body = postcard::to_stdvec(body).map_err(|e| CallError::Network(e.to_string()))?;
    let mut url =
        reqwest::Url::parse_with_params(&format!("http://{addr}/raft/{rpc}"), [("topic", topic)])
            .map_err(|e| CallError::Network(format!("{addr}: {e}")))?;
    if let Some(to) = to {
        url.query_pairs_mut().append_pair("to", &to.to_string());
    }
    let mut request = client
        .post(url)
        .header("content-type", "application/octet-stream")
        .body(body);
    if let Some(ttl) = ttl {
        request = request.timeout(ttl);
    }
    let reply = request
        .send()
        .await
        .map_err(|e| CallError::Unreachable(format!("{addr}: {e}")))?;
    let status = reply.status();
    let bytes = reply
        .bytes()
        .await
        .map_err(|e| CallError::Unreachable(format!("{addr}: {e}")))?;
    if status == StatusCode::NOT_FOUND {
        // The peer does not (yet, or any more) hold this group, or is another node now (a
        // wiped broker on the same address): like a peer that is down.
        return Err(CallError::Unreachable(format!(
            "{addr}: {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    if !status.is_success() {
        return Err(CallError::Network(format!(
            "{addr}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    postcard::from_bytes(&bytes).map_err(|e| CallError::Network(format!("{addr}: {e}")))
}

impl HttpNetwork {
    async fn rpc<Req: Serialize, Resp: DeserializeOwned, E>(
        &self,
        rpc: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let answer: Result<Resp, RaftError<NodeId, E>> = call(
            &self.client,
            &self.addr,
            rpc,
            (&self.topic, Some(self.target)),
            req,
            Some(option.hard_ttl()),
        )
        .await?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for HttpNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.rpc("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.rpc("vote", &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

/// Why a proposal was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// The node asked is not the leader; `leader` is the one it knows, if any.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's id and HTTP address, if known.
        leader: Option<(NodeId, String)>,
    },
    /// The group could not commit it (no majority, shutting down, storage failure).
    #[error("{0}")]
    Failed(String),
    /// The call itself failed.
    #[error("{0}")]
    Unreachable(String),
}

/// Proposes `command` to `topic`'s group on this node: answers once it is committed and
/// applied here (or why not).
pub async fn propose_local(raft: &Raft, command: Command) -> Result<Applied, ProposeError> {
    match raft.client_write(command).await {
        Ok(written) => Ok(written.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
            Err(ProposeError::NotLeader {
                leader: forward
                    .leader_id
                    .zip(forward.leader_node.map(|node| node.addr)),
            })
        }
        Err(e) => Err(ProposeError::Failed(e.to_string())),
    }
}

/// Proposes `command` to `topic`'s group through the node at HTTP address `addr`.
pub async fn propose_remote(
    client: &reqwest::Client,
    addr: &str,
    topic: &str,
    command: &Command,
) -> Result<Applied, ProposeError> {
    let answer: Result<Applied, ProposeError> =
        call(client, addr, "propose", (topic, None), command, None)
            .await
            .map_err(|e| ProposeError::Unreachable(e.to_string()))?;
    answer
}

#[derive(Deserialize)]
struct TopicQuery {
    topic: String,
    /// The node a Raft RPC is for. A broker whose disk was wiped answers on its old address
    /// under a new node id; it must not take (and answer) the old node's traffic, or the
    /// leader would see that node's log go backwards.
    to: Option<NodeId>,
}

type Shared = Arc<dyn Groups>;

/// Largest RPC body accepted: an append carries at most `MAX_PAYLOAD_ENTRIES` entries, each a
/// publish no larger than the broker's `--max-body-size`.
const MAX_BODY: usize = 512 * 1024 * 1024;

/// The server side: `/raft/{append,vote,snapshot,propose}?topic=T`.
pub fn router(groups: Arc<dyn Groups>) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/propose", post(propose))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(groups)
}

fn encode<T: Serialize>(value: &T) -> Response {
    match postcard::to_stdvec(value) {
        Ok(bytes) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            bytes,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The group and the decoded request, or the answer to send instead.
fn open<T: DeserializeOwned>(
    groups: &Shared,
    query: &TopicQuery,
    body: &[u8],
) -> Result<(Raft, T), (StatusCode, String)> {
    let raft = groups.group(&query.topic).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            format!("no replica of {}", query.topic),
        )
    })?;
    if let Some(to) = query.to {
        let here = raft.metrics().borrow().id;
        if to != here {
            let text = format!(
                "node {to} of {} is not here (this is node {here})",
                query.topic
            );
            return Err((StatusCode::NOT_FOUND, text));
        }
    }
    let request = postcard::from_bytes(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad raft request: {e}")))?;
    Ok((raft, request))
}

async fn append(
    State(groups): State<Shared>,
    Query(query): Query<TopicQuery>,
    body: Bytes,
) -> Response {
    match open::<AppendEntriesRequest<TypeConfig>>(&groups, &query, &body) {
        Ok((raft, request)) => encode(&raft.append_entries(request).await),
        Err(answer) => answer.into_response(),
    }
}

async fn vote(
    State(groups): State<Shared>,
    Query(query): Query<TopicQuery>,
    body: Bytes,
) -> Response {
    match open::<VoteRequest<NodeId>>(&groups, &query, &body) {
        Ok((raft, request)) => encode(&raft.vote(request).await),
        Err(answer) => answer.into_response(),
    }
}

async fn snapshot(
    State(groups): State<Shared>,
    Query(query): Query<TopicQuery>,
    body: Bytes,
) -> Response {
    match open::<InstallSnapshotRequest<TypeConfig>>(&groups, &query, &body) {
        Ok((raft, request)) => encode(&raft.install_snapshot(request).await),
        Err(answer) => answer.into_response(),
    }
}

async fn propose(
    State(groups): State<Shared>,
    Query(query): Query<TopicQuery>,
    body: Bytes,
) -> Response {
    match open::<Command>(&groups, &query, &body) {
        Ok((raft, command)) => encode(&propose_local(&raft, command).await),
        Err(answer) => answer.into_response(),
    }
}

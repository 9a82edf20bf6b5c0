//! The etcd poller: `/v3/maintenance/status` and `/v3/cluster/member/list` on each endpoint.

use std::path::PathBuf;

use serde::Deserialize;

use super::poll::Timing;
use crate::support::problems::Problems;

#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Config {
    /// `cluster`, `interval`, `timeout`, `down_after`: read apart, see [`Timing`].
    #[serde(skip)]
    pub timing: Timing,
    /// Client URLs (`http://127.0.0.1:2379`); required, at least one.
    #[serde(default)]
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Config {
    pub(crate) fn validate(self, path: &str, p: &mut Problems) -> Option<Self> {
        let mut ok = self.timing.validate(path, p);
        ok &= p.require(path, "endpoints", !self.endpoints.is_empty());
        ok.then_some(self)
    }
}

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::poll::{polling, Checker};
use super::{SourceContext, SourceError};
use crate::model::{Observation, Signal, Via};
use crate::pipeline::Input;
use crate::support::url::redacted;

/// What herald knows of the members: ids and client URLs to names.
#[derive(Default)]
struct Members {
    by_id: HashMap<String, String>,
    by_url: HashMap<String, String>,
    token: Option<String>,
}

/// One endpoint's answer to `/v3/maintenance/status`.
struct Status {
    member: String,
    leader: String,
}

/// A JSON gateway uint64: a string, or a number from a gateway that sends one.
fn id(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn client(config: &Config) -> Result<reqwest::Client, SourceError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|source| SourceError::Io { path: path.display().to_string(), source })
    };
    let tls = |path: &std::path::Path, e: reqwest::Error| SourceError::Tls {
        path: path.display().to_string(),
        source: e.into(),
    };
    let mut b = reqwest::Client::builder()
        .timeout(config.timing.timeout())
        .connect_timeout(config.timing.timeout());
    if let Some(ca) = &config.ca_file {
        let cert = reqwest::Certificate::from_pem(&read(ca)?).map_err(|e| tls(ca, e))?;
        b = b.add_root_certificate(cert);
    }
    if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
        let mut pem = read(cert)?;
        pem.extend(read(key)?);
        b = b.identity(reqwest::Identity::from_pem(&pem).map_err(|e| tls(cert, e))?);
    }
    let first = config.endpoints.first().map(String::as_str).unwrap_or("etcd");
    b.build().map_err(|e| SourceError::broker(first, e))
}

async fn post(
    client: &reqwest::Client,
    endpoint: &str,
    path: &str,
    body: serde_json::Value,
    token: Option<&str>,
) -> Result<serde_json::Value, SourceError> {
    let url = format!("{}{path}", endpoint.trim_end_matches('/'));
    let e = |e: String| SourceError::broker(&url, e);
    let mut req =
        client.post(&url).header("content-type", "application/json").body(body.to_string());
    if let Some(t) = token {
        req = req.header("authorization", t);
    }
    let resp = req.send().await.map_err(|x| e(x.to_string()))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|x| e(x.to_string()))?;
    if !status.is_success() {
        let body = text.chars().take(200).collect();
        return Err(SourceError::Refused { url: redacted(&url), status: status.as_u16(), body });
    }
    serde_json::from_str(&text).map_err(|x| e(x.to_string()))
}

async fn status(
    client: &reqwest::Client,
    endpoint: &str,
    token: Option<&str>,
) -> Result<Status, SourceError> {
    let v = post(client, endpoint, "/v3/maintenance/status", serde_json::json!({}), token).await?;
    let member = id(&v["header"]["member_id"])
        .ok_or_else(|| SourceError::broker(endpoint, "status without header.member_id"))?;
    let leader = id(&v["leader"]).unwrap_or_else(|| "0".into());
    Ok(Status { member, leader })
}

async fn members(
    client: &reqwest::Client,
    endpoint: &str,
    token: Option<&str>,
) -> Result<Vec<(String, String, Vec<String>)>, SourceError> {
    let v = post(client, endpoint, "/v3/cluster/member/list", serde_json::json!({}), token).await?;
    Ok(v["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| {
                    let id = id(&m["ID"])?;
                    // A member that has not started yet has no name: its id stands in.
                    let name =
                        m["name"].as_str().filter(|n| !n.is_empty()).unwrap_or(&id).to_string();
                    let urls = m["clientURLs"]
                        .as_array()
                        .map(|u| u.iter().filter_map(|u| u.as_str().map(str::to_string)).collect())
                        .unwrap_or_default();
                    Some((id, name, urls))
                })
                .collect()
        })
        .unwrap_or_default())
}

async fn authenticate(client: &reqwest::Client, endpoint: &str, config: &Config) -> Option<String> {
    let (user, password) = (config.username.as_ref()?, config.password.as_deref().unwrap_or(""));
    let body = serde_json::json!({ "name": user, "password": password });
    match post(client, endpoint, "/v3/auth/authenticate", body, None).await {
        Ok(v) => v["token"].as_str().map(str::to_string),
        Err(e) => {
            tracing::warn!(endpoint, error = %e, "etcd authentication failed");
            None
        }
    }
}

fn normalize(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

super::poll::poller!(run);

/// Polls every endpoint each interval until `stop`: each member's view of the leader, and
/// whether it answered within the timeout.
async fn run(config: Config, ctx: SourceContext) {
    let (name, source, tx) = (ctx.name.clone(), ctx.index, ctx.tx.clone());
    let client = match client(&config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(source = %name, error = %e, "etcd source cannot start");
            let _ = tx.send(Input::Ended { source, error: Some(e.to_string()) }).await;
            return;
        }
    };
    let checker = Checker::new(&config.timing, Via::Poll, 1, ctx.clock);
    tracing::info!(source = %name, endpoints = config.endpoints.len(), interval = ?config.timing.interval(), "polling etcd");
    let known = Arc::new(Mutex::new(Members::default()));
    let config = Arc::new(config);
    polling(&ctx, config.timing.interval(), || {
        let (client, config, known, checker) =
            (client.clone(), config.clone(), known.clone(), checker.clone());
        async move { round(&client, &config, &known, &checker).await }
    })
    .await;
}

async fn round(
    client: &reqwest::Client,
    config: &Config,
    known: &Mutex<Members>,
    checker: &Checker,
) -> Vec<Observation<'static>> {
    let at = checker.now();
    let lock = || known.lock().unwrap_or_else(|p| p.into_inner());
    let token = lock().token.clone();
    let answers = futures_util::future::join_all(
        config.endpoints.iter().map(|ep| status(client, ep, token.as_deref())),
    )
    .await;
    // Names first: a new member, or a leader nobody has named yet, means the list changed.
    let unknown = answers.iter().flatten().any(|s| {
        let k = lock();
        !k.by_id.contains_key(&s.member) || (s.leader != "0" && !k.by_id.contains_key(&s.leader))
    }) || lock().by_id.is_empty();
    if unknown
        || answers.iter().any(|a| {
            a.as_ref().is_err_and(|e| matches!(e, SourceError::Refused { status: 401, .. }))
        })
    {
        for (ep, answer) in config.endpoints.iter().zip(&answers) {
            if answer.is_err() && token.is_none() && config.username.is_none() {
                continue;
            }
            if config.username.is_some() && (lock().token.is_none() || answer.is_err()) {
                let t = authenticate(client, ep, config).await;
                lock().token = t;
            }
            let token = lock().token.clone();
            if let Ok(ms) = members(client, ep, token.as_deref()).await {
                let mut k = lock();
                for (id, name, urls) in ms {
                    for u in urls {
                        k.by_url.insert(normalize(&u), name.clone());
                    }
                    k.by_id.insert(id, name);
                }
                break;
            }
        }
    }
    let k = lock();
    let mut out = Vec::new();
    for (ep, answer) in config.endpoints.iter().zip(answers) {
        let by_url = k.by_url.get(&normalize(ep)).cloned();
        match answer {
            Ok(s) => {
                let node = k.by_id.get(&s.member).cloned().or(by_url).unwrap_or(s.member);
                out.push(checker.check(&node, true, at));
                let leader = match s.leader.as_str() {
                    "0" => None,
                    l => Some(k.by_id.get(l).cloned().unwrap_or_else(|| l.to_string()).into()),
                };
                out.push(Observation {
                    cluster: checker.cluster.clone().into(),
                    reporter: node.into(),
                    at,
                    signal: Signal::View { leader },
                });
            }
            Err(e) => {
                tracing::debug!(endpoint = %ep, error = %e, "etcd endpoint did not answer");
                let node = by_url.unwrap_or_else(|| {
                    ep.trim_start_matches("http://").trim_start_matches("https://").to_string()
                });
                out.push(checker.check(&node, false, at));
            }
        }
    }
    out
}

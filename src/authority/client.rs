//! The vendor CLI's client of the admin API: bearer token, JSON in and out, a refusal
//! turned back into its code and sentence.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Why a call to the authority failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the admin token {path}: {source}")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the authority at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{code} ({status}): {detail}")]
    Refused {
        status: u16,
        code: String,
        detail: String,
        details: Value,
    },
    #[error("the authority answered {status} with a body that is not JSON")]
    NotJson { status: u16 },
}

/// A client of one authority's admin API.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client of the authority at `url` with the token in `token_file`.
    pub fn new(url: &str, token_file: &Path) -> Result<AdminClient, ClientError> {
        let token = std::fs::read_to_string(token_file).map_err(|source| ClientError::Token {
            path: token_file.display().to_string(),
            source,
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| ClientError::Unreachable {
                url: url.to_string(),
                source,
            })?;
        Ok(AdminClient {
            base: url.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
            http,
        })
    }

    /// `method` on `/admin/v1{path}` with an optional JSON body; the answer's JSON.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let (status, text) = self.send(request).await?;
        serde_json::from_str(&text).map_err(|_| ClientError::NotJson { status })
    }

    /// Posts `bytes` verbatim (a file) to `/admin/v1{path}`; returns the body as text.
    pub async fn post_file(&self, path: &str, bytes: Vec<u8>) -> Result<String, ClientError> {
        let request = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(bytes);
        Ok(self.send(request).await?.1)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}/admin/v1{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends `request`: (status, body) of a success, the refusal otherwise.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, String), ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            url: self.base.clone(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(unreachable)?;
        if (200..300).contains(&status) {
            Ok((status, text))
        } else {
            Err(refused(status, &text))
        }
    }
}

/// The refusal in a problem+json body.
fn refused(status: u16, text: &str) -> ClientError {
    match serde_json::from_str::<Value>(text) {
        Ok(problem) => ClientError::Refused {
            status,
            code: problem["error_code"]
                .as_str()
                .unwrap_or("ERROR")
                .to_string(),
            detail: problem["detail"].as_str().unwrap_or_default().to_string(),
            details: problem["details"].clone(),
        },
        Err(_) => ClientError::NotJson { status },
    }
}

//! The few S3 calls a bundle upload needs, with path-style addressing
//! (`<endpoint>/<bucket>/<key>`), as Eucalyptus's object storage takes them.

use reqwest::Method;

use crate::publish::aws::ec2_api::encode;
use crate::publish::http::{ApiError, Client, Request, Service};

pub struct S3<'a> {
    pub client: &'a Client,
    pub endpoint: String,
}

/// A key's path, each segment percent-encoded.
fn key_path(key: &str) -> String {
    key.split('/').map(encode).collect::<Vec<_>>().join("/")
}

impl<'a> S3<'a> {
    pub fn new(client: &'a Client, endpoint: &str) -> S3<'a> {
        S3 {
            client,
            endpoint: endpoint.trim_end_matches('/').to_string(),
        }
    }

    pub fn url(&self, bucket: &str, key: &str) -> String {
        format!("{}/{}/{}", self.endpoint, encode(bucket), key_path(key))
    }

    /// Fails clearly when the bucket is missing or not ours to write.
    pub fn check_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let url = format!("{}/{}", self.endpoint, encode(bucket));
        let r = self.client.send(&Request {
            service: Service::S3,
            action: "s3:ListBucket",
            method: Method::HEAD,
            url: url.clone(),
            headers: Vec::new(),
            body: b"",
            unsigned_payload: false,
            what: format!("checking bucket `{bucket}`"),
        });
        match r {
            Ok(_) => Ok(()),
            Err(ApiError::Status { status: 404, .. }) => anyhow::bail!(
                "bucket `{bucket}` does not exist at {}: create it first, or name an existing one in `bucket` ([targets.eucalyptus]) or --bucket",
                self.endpoint
            ),
            Err(e) => Err(e.into()),
        }
    }

    pub fn put(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<(), ApiError> {
        self.client.send(&Request {
            service: Service::S3,
            action: "s3:PutObject",
            method: Method::PUT,
            url: self.url(bucket, key),
            headers: vec![("content-type".to_string(), content_type.to_string())],
            body,
            unsigned_payload: false,
            what: format!("uploading s3://{bucket}/{key}"),
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_per_segment() {
        assert_eq!(key_path("a b/c+d.xml"), "a%20b/c%2Bd.xml");
    }
}

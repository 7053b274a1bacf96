//! The bucket holding the archive's objects, on any S3-compatible object store (the local
//! stack's SeaweedFS, MinIO, AWS S3…), through `object_store`.
//!
//! Objects are only ever created, never overwritten: [`Bucket::put_if_absent`] sends
//! `If-None-Match: *`, and when an object already exists at the key it hands back the existing
//! bytes, so the writer adopts what is there instead of making a second copy.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use crate::error::ArchiveError;
use crate::naming;

/// Where the archive is. Its `Debug` shows the secret as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct BucketConfig {
    /// The S3 endpoint (`http://127.0.0.1:8333` locally); `None` for AWS itself.
    pub endpoint: Option<String>,
    /// The bucket's name.
    pub bucket: String,
    /// The region (`us-east-1` for stores that have none).
    pub region: String,
    /// Prepended to every key (for example `factline/`), empty by default.
    pub prefix: String,
    /// Credentials; without them requests are sent unsigned (a local store without IAM).
    pub access_key_id: Option<String>,
    /// The secret of `access_key_id`.
    pub secret_access_key: Option<String>,
}

impl std::fmt::Debug for BucketConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl BucketConfig {
    /// The local stack's bucket at `endpoint`.
    pub fn local(endpoint: &str, bucket: &str) -> BucketConfig {
        BucketConfig {
            endpoint: Some(endpoint.to_owned()),
            bucket: bucket.to_owned(),
            region: "us-east-1".into(),
            prefix: String::new(),
            access_key_id: None,
            secret_access_key: None,
        }
    }
}

/// What [`Bucket::put_if_absent`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// The object was created with the bytes given.
    Created,
    /// An object already existed at the key; these are its bytes.
    AlreadyThere(Bytes),
}

/// A bucket of archive objects.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl Bucket {
    /// Connects (lazily: nothing is sent before the first request).
    pub fn open(config: &BucketConfig) -> Result<Bucket, ArchiveError> {
        if config.bucket.is_empty() {
            return Err(ArchiveError::Config("the bucket name is empty".into()));
        }
        if !config.prefix.is_empty() && !config.prefix.ends_with('/') {
            return Err(ArchiveError::Config(format!(
                "the key prefix {:?} must end with '/'",
                config.prefix
            )));
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_conditional_put(S3ConditionalPut::ETagMatch);
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id)
                    .with_secret_access_key(secret)
            }
            (None, None) => builder = builder.with_skip_signature(true),
            _ => {
                return Err(ArchiveError::Config(
                    "set both the access key id and the secret access key, or neither".into(),
                ))
            }
        }
        Ok(Bucket {
            store: Arc::new(builder.build()?),
            prefix: config.prefix.clone(),
        })
    }

    /// The key prefix of every object.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Creates the object at `key` unless one exists; then returns the existing bytes.
    pub async fn put_if_absent(&self, key: &str, bytes: Vec<u8>) -> Result<Stored, ArchiveError> {
        let path = Path::from(key);
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(bytes), options)
            .await
        {
            Ok(_) => Ok(Stored::Created),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Ok(Stored::AlreadyThere(self.get(key).await?))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The bytes of the object at `key`.
    pub async fn get(&self, key: &str) -> Result<Bytes, ArchiveError> {
        Ok(self.store.get(&Path::from(key)).await?.bytes().await?)
    }

    /// The keys of every object of `topic`'s `partition`, in offset order.
    pub async fn list_partition(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Vec<String>, ArchiveError> {
        let folder = naming::partition_folder(&self.prefix, topic, partition);
        let mut keys: Vec<String> = self
            .store
            .list(Some(&Path::from(folder.as_str())))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await?;
        keys.retain(|key| naming::parse_object_key(&self.prefix, key).is_some());
        keys.sort();
        Ok(keys)
    }
}

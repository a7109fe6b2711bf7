//! Images in OCI registries: `thaw push`, `thaw pull` and `thaw run REF`.
//!
//! The registry is never trusted. A pulled image is written to a temporary file beside its
//! destination and checked there exactly as a local file is (signature against the trust store
//! before anything is parsed, then every payload chunk) before it takes its name: a registry
//! serving a changed, truncated, reordered or substituted blob, or another image's manifest,
//! gets the usual refusal and leaves nothing behind. The client and its runtime exist only in
//! these commands, never on the restore path of a local file.

pub mod artifact;
pub mod cache;
mod lookup;
pub mod payload;
pub mod share;
mod sparse;

pub use lookup::Lookup;
pub use sparse::Sparse;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::exit::{Code, Failure, Result};
use crate::privilege::Context;
use artifact::Descriptor;

/// Blobs fetched at once (over one or more connections).
const PARALLEL: usize = 8;
/// Bytes of a blob being received that are written out at once (in whole pages) for a restore
/// waiting for them, rather than at its end.
const STREAM_PIECE: usize = 64 << 10;
/// What an answer cut off in the middle must have brought for the attempts to count from one
/// again (see `Remote::stream_range`).
const GOOD_PART: u64 = 1 << 20;
/// Attempts of one request on a network failure (not on a refusal), with back-off between.
const ATTEMPTS: u32 = 4;

/// A repository in a registry, and how to talk to it.
pub struct Remote {
    reference: Reference,
    client: Client,
    /// Without credentials, a client that never asks the registry how to authenticate: the
    /// client library asks again (`GET /v2/`) before every request where the answer was "no
    /// need" (it caches only tokens), which doubled the requests of a lazy restore from a
    /// registry open to anonymous pulls, each costing the registry as much CPU as a blob. A
    /// registry that wants a token for anonymous pulls refuses its request (401) once, and
    /// `client` (which fetches and keeps the token) serves from then on.
    open: Option<Client>,
    open_refused: std::sync::atomic::AtomicBool,
    /// What `open` is given where the library wants credentials (a manifest): an empty bearer
    /// token, the one kind it sends without asking first. A registry open to anonymous pulls
    /// ignores it; one that wants a token refuses it like no token at all.
    open_auth: RegistryAuth,
    auth: RegistryAuth,
    runtime: tokio::runtime::Runtime,
}

impl Drop for Remote {
    fn drop(&mut self) {
        // The runtime's threads (name resolution runs on a blocking pool) end here, before a
        // restore: the launcher grows its descriptor table and clones itself with no other
        // thread running.
        let rt = std::mem::replace(
            &mut self.runtime,
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime without drivers"),
        );
        rt.shutdown_timeout(Duration::from_secs(2));
    }
}

/// A launcher running with elevated privileges reads no environment (credentials, cache) and
/// writes no file of its own: it does not fetch images.
pub fn refuse_if_elevated(ctx: &Context) -> Result<()> {
    if ctx.elevated {
        return Err(Failure::new(
            Code::Refused,
            "a privileged launcher does not fetch images: `thaw pull` it, then run the file",
        ));
    }
    Ok(())
}

/// The manifest digest a reference pins (`...@sha256:HEX`), if it does.
pub fn pinned_digest(reference: &str) -> Option<String> {
    parse_reference(reference)?.digest().map(str::to_string)
}

/// Whether `arg` names an image in a registry rather than a file: `HOST[:PORT]/NAME[:TAG]`
/// where HOST has a dot or a port or is `localhost`, and no file of that name exists.
pub fn is_reference(arg: &str) -> bool {
    let Some((host, rest)) = arg.split_once('/') else {
        return false;
    };
    !rest.is_empty()
        && (host.contains('.') || host.contains(':') || host == "localhost")
        && !Path::new(arg).exists()
}

impl Remote {
    pub fn new(reference: &str, ctx: &Context) -> Result<Remote> {
        refuse_if_elevated(ctx)?;
        let parsed = parse_reference(reference).ok_or_else(|| {
            Failure::new(
                Code::Usage,
                format!("{reference}: not an image reference (HOST[:PORT]/NAME[:TAG|@sha256:HEX])"),
            )
        })?;
        let registry = parsed.resolve_registry().to_string();
        // Plain HTTP only to a registry on this machine; TLS (with the system's roots) elsewhere.
        let host = registry
            .rsplit_once(':')
            .map_or(registry.as_str(), |(h, _)| h);
        let loopback =
            matches!(host, "localhost" | "127.0.0.1" | "[::1]") || host.starts_with("127.");
        let protocol = if loopback {
            oci_client::client::ClientProtocol::HttpsExcept(vec![registry.clone()])
        } else {
            oci_client::client::ClientProtocol::Https
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A loopback registry is spoken to in plain HTTP: no TLS root is needed, and loading the
        // system's (hundreds of files) cost more than a restore. The only root given instead is
        // a self-signed certificate whose key was thrown away when it was made: any TLS
        // connection (a redirect elsewhere) fails closed.
        let tls_certs_only = if loopback {
            vec![oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: include_bytes!("loopback-nothing.pem").to_vec(),
            }]
        } else {
            Vec::new()
        };
        // A registry that accepts a connection and then stalls must not hang a restore (a fault
        // waits on it) for ever: a request fails, and is tried again, after these.
        let config = || oci_client::client::ClientConfig {
            protocol: protocol.clone(),
            tls_certs_only: tls_certs_only.clone(),
            connect_timeout: Some(Duration::from_secs(5)),
            read_timeout: Some(Duration::from_secs(20)),
            ..Default::default()
        };
        let auth = credentials(&registry, ctx)?;
        let anonymous = matches!(auth, RegistryAuth::Anonymous);
        // The client also builds a default HTTP client, which panics on a system without CA
        // certificates: a one-line error instead (and no panic message).
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let build = || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (
                    Client::new(config()),
                    anonymous.then(|| Client::new(config())),
                )
            }))
        };
        let clients = if loopback {
            without_system_roots(build)
        } else {
            build()
        };
        std::panic::set_hook(hook);
        let (client, open) = clients.map_err(|_| {
            Failure::new(
                Code::Refused,
                "cannot set up HTTPS: this system has no CA certificates (install ca-certificates)",
            )
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // Its threads (name lookups) take no signal: the launcher's main thread forwards
            // them to the process (see cli::run).
            .on_thread_start(|| {
                crate::sys::set_sigmask(u64::MAX);
            })
            .build()
            .map_err(|e| {
                Failure::new(
                    Code::Internal,
                    format!("cannot start the network runtime: {e}"),
                )
            })?;
        Ok(Remote {
            auth,
            reference: parsed,
            client,
            open,
            open_refused: Default::default(),
            open_auth: RegistryAuth::Bearer(String::new()),
            runtime,
        })
    }

    pub fn name(&self) -> String {
        self.reference.whole()
    }

    /// The reference's tag, if it has one.
    pub fn tag(&self) -> Option<&str> {
        self.reference.tag()
    }

    pub fn repository(&self) -> &str {
        self.reference.repository()
    }

    /// Runs `op` until it succeeds, fails for a reason other than the network, or has failed
    /// [`ATTEMPTS`] times (0.25, 0.5, 1 s apart).
    fn retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        self.runtime.block_on(self.retrying(what, op))
    }

    async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < ATTEMPTS && transient(&e) => {
                    pause(attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(failure(&self.name(), what, &e)),
            }
        }
    }

    /// Uploads a blob unless the repository has it; the bytes sent (0 when it had it).
    pub fn put_blob(&self, d: &Descriptor, bytes: &[u8]) -> Result<u64> {
        self.runtime.block_on(self.upload(d, bytes))
    }

    /// Uploads every blob `blobs` yields (its bytes and media type) that the repository lacks,
    /// [`PARALLEL`] at a time; their descriptors in order and the bytes sent. `progress` is told
    /// of each.
    pub fn put_blobs(
        &self,
        blobs: impl Iterator<Item = Result<(Vec<u8>, &'static str)>>,
        progress: &Progress,
    ) -> Result<(Vec<Descriptor>, u64)> {
        use futures_util::StreamExt;
        let r = &self.reference;
        self.runtime.block_on(
            self.client
                .store_auth_if_needed(r.resolve_registry(), &self.auth),
        );
        // A blob that appears twice in the image (zero-filled memory) is sent once.
        let claimed = std::sync::Mutex::new(std::collections::HashSet::new());
        let claimed = &claimed;
        let results: Vec<Result<(Descriptor, u64)>> = self.runtime.block_on(
            futures_util::stream::iter(blobs)
                .map(|blob| async move {
                    let (bytes, media_type) = blob?;
                    let d = Descriptor::of(media_type, &bytes);
                    let first = claimed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(d.digest.clone());
                    let sent = if first {
                        self.upload(&d, &bytes).await?
                    } else {
                        0
                    };
                    progress.add(d.size);
                    Ok((d, sent))
                })
                .buffered(PARALLEL)
                .collect(),
        );
        let mut sent = 0;
        let mut ds = Vec::with_capacity(results.len());
        for r in results {
            let (d, s) = r?;
            sent += s;
            ds.push(d);
        }
        Ok((ds, sent))
    }

    async fn upload(&self, d: &Descriptor, bytes: &[u8]) -> Result<u64> {
        let r = &self.reference;
        self.client
            .store_auth_if_needed(r.resolve_registry(), &self.auth)
            .await;
        if self
            .retrying("checking a blob in", || {
                self.client.blob_exists(r, &d.digest)
            })
            .await?
        {
            return Ok(0);
        }
        let data = bytes::Bytes::copy_from_slice(bytes);
        self.retrying("uploading a blob to", || {
            self.client.push_blob(r, data.clone(), &d.digest)
        })
        .await?;
        Ok(d.size)
    }

    /// Publishes `m` under the reference's tag; returns its digest.
    pub fn put_manifest(&self, m: &artifact::Manifest) -> Result<String> {
        let body = serde_json::to_vec(m).map_err(|e| {
            Failure::new(Code::Internal, format!("cannot encode the manifest: {e}"))
        })?;
        let digest = artifact::sha256(&body);
        let r = &self.reference;
        let ct = http::HeaderValue::from_static(artifact::MANIFEST_TYPE);
        self.retry("publishing the manifest to", || {
            self.client.push_manifest_raw(r, body.clone(), ct.clone())
        })?;
        Ok(digest)
    }

    /// The digest of the manifest the reference names, as the registry states it (a `HEAD`
    /// request: no manifest to transfer and parse). Only good for telling whether a tag still
    /// names a manifest already fetched and checked, never for trusting a manifest.
    pub fn manifest_digest(&self) -> Result<String> {
        let r = &self.reference;
        self.retry("looking up", || {
            self.pulling(|c, auth| c.fetch_manifest_digest(r, auth))
        })
    }

    /// The reference's manifest, checked to be a thaw image's, and its digest.
    pub fn manifest(&self) -> Result<(artifact::Manifest, String)> {
        self.manifest_of(&self.reference)
    }

    /// The tags of the repository (at most the first 1,000 the registry lists).
    pub fn tags(&self) -> Result<Vec<String>> {
        let r = &self.reference;
        let listed = self.retry("listing the tags of", || {
            self.client.list_tags(r, &self.auth, Some(1000), None)
        })?;
        Ok(listed.tags)
    }

    /// The manifest tag `tag` of the repository names, as [`Self::manifest`].
    pub fn manifest_tagged(&self, tag: &str) -> Result<(artifact::Manifest, String)> {
        let r = &self.reference;
        let other = Reference::with_tag(
            r.registry().to_string(),
            r.repository().to_string(),
            tag.to_string(),
        );
        self.manifest_of(&other)
    }

    fn manifest_of(&self, r: &Reference) -> Result<(artifact::Manifest, String)> {
        let (bytes, _) = self.retry("fetching the manifest from", || {
            self.pulling(|c, auth| c.pull_manifest_raw(r, auth, &[artifact::MANIFEST_TYPE]))
        })?;
        // The digest is the bytes' own, never the one the registry states; a reference by digest
        // must get exactly that manifest.
        let digest = artifact::sha256(&bytes);
        if r.digest().is_some_and(|pinned| pinned != digest) {
            return Err(Failure::new(
                Code::Corrupt,
                format!("{}: the manifest does not match its digest", self.name()),
            ));
        }
        let m = artifact::parse(&bytes)
            .map_err(|e| Failure::new(Code::Corrupt, format!("{}: {e}", self.name())))?;
        Ok((m, digest))
    }

    /// The bytes of every blob of `ds`, in order, fetched [`PARALLEL`] at a time.
    pub fn blobs(&self, ds: &[&Descriptor]) -> Vec<Result<Vec<u8>>> {
        use futures_util::StreamExt;
        self.runtime.block_on(
            futures_util::stream::iter(ds)
                .map(|d| self.fetch_blob(d))
                .buffered(PARALLEL)
                .collect(),
        )
    }

    /// Streams bytes `start..end` of blob `d` (an HTTP range request) to `land` as they
    /// come, in runs of whole `page`s of at least [`STREAM_PIECE`] bytes, each with its offset in
    /// the blob (the whole blob, from 0, where the registry answers with all of it); a
    /// connection lost on the way is asked again for what had not come. Nothing here is
    /// hashed: the caller checks every chunk against its signed digest before it is used. A
    /// registry cannot make the launcher take more than it asked for, or less without a
    /// failure. Each request made is counted in `requests`.
    pub(super) async fn stream_range(
        &self,
        d: &Descriptor,
        (mut start, end): (u64, u64),
        page: u64,
        land: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
        requests: &AtomicU64,
    ) -> Result<()> {
        use futures_util::StreamExt;
        let r = &self.reference;
        let desc = d.oci();
        let what = "fetching part of a blob from";
        let mut attempt = 1;
        while start < end {
            requests.fetch_add(1, Ordering::Relaxed);
            let sent = self
                .pulling(|c, _| c.pull_blob_stream_partial(r, &desc, start, Some(end - start)))
                .await;
            let (mut at, limit, mut stream) = match sent {
                Ok(oci_client::client::BlobResponse::Full(s)) => (0, d.size, s.stream),
                Ok(oci_client::client::BlobResponse::Partial(s)) => (start, end, s.stream),
                Err(e) if attempt < ATTEMPTS && transient(&e) => {
                    pause(attempt).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(failure(&self.name(), what, &e)),
            };
            let from = at;
            let mut held: Vec<u8> = Vec::with_capacity(2 * STREAM_PIECE);
            let lost = loop {
                let b = match stream.next().await {
                    Some(Ok(b)) => b,
                    // The client checks a blob sent whole at its end and says so as an error
                    // of its own: every byte has come, and the chunks are checked anyway.
                    Some(Err(e)) if at + held.len() as u64 == limit && e.get_ref().is_some() => {
                        break None
                    }
                    Some(Err(e)) => break Some(e),
                    None => break None,
                };
                if at + (held.len() + b.len()) as u64 > limit {
                    return Err(Failure::new(
                        Code::Corrupt,
                        format!(
                            "{}: the registry sent more of blob {} than was asked for",
                            self.name(),
                            d.digest
                        ),
                    ));
                }
                held.extend_from_slice(&b);
                if held.len() >= STREAM_PIECE {
                    let n = held.len() as u64 / page * page;
                    land(at, &held[..n as usize])?;
                    held.drain(..n as usize);
                    at += n;
                }
            };
            // What came in whole pages is kept (all of it where the answer is complete); a
            // partial page is asked for again with the rest, or is the end of a short answer.
            let n = if lost.is_none() && at + held.len() as u64 == limit {
                held.len() as u64
            } else {
                held.len() as u64 / page * page
            };
            if n > 0 {
                land(at, &held[..n as usize])?;
                at += n;
            }
            match lost {
                None if at == limit => return Ok(()),
                None => {
                    return Err(Failure::new(
                        Code::Corrupt,
                        format!(
                            "{}: the registry sent {} bytes of blob {} where {} were asked for",
                            self.name(),
                            at - from,
                            d.digest,
                            limit - from
                        ),
                    ))
                }
                // Asked again from the first byte that has not come (all of it again after a
                // blob sent whole that stopped before): at once where this answer brought some
                // (a dropped connection), after a pause where it brought none. Only an answer
                // that brought a good part starts the count of attempts again: a registry that
                // drops every answer after a page fails as soon as one that sends nothing.
                Some(e) => {
                    let brought = at.saturating_sub(start);
                    if brought >= GOOD_PART || at >= end {
                        attempt = 1;
                    } else if attempt >= ATTEMPTS {
                        return Err(Failure::new(
                            Code::Io,
                            format!(
                                "{what} {}: blob {} broke off {ATTEMPTS} times in a row: {}",
                                self.name(),
                                d.digest,
                                crate::exit::one_line(&e)
                            ),
                        ));
                    } else {
                        if brought == 0 {
                            pause(attempt).await;
                        }
                        attempt += 1;
                    }
                    start = start.max(at.min(end));
                }
            }
        }
        Ok(())
    }

    /// Runs a pull with the client without credentials where there is one (see `open`), else,
    /// or once the registry has refused it, with `client`; each with the credentials to give
    /// it (the client asks for them only to pull a manifest).
    async fn pulling<'c, T, Fut>(
        &'c self,
        pull: impl Fn(&'c Client, &'c RegistryAuth) -> Fut,
    ) -> std::result::Result<T, OciDistributionError>
    where
        Fut: std::future::Future<Output = std::result::Result<T, OciDistributionError>>,
    {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(open) = self
            .open
            .as_ref()
            .filter(|_| !self.open_refused.load(Relaxed))
        {
            match pull(open, &self.open_auth).await {
                Err(e) if refused(&e) => self.open_refused.store(true, Relaxed),
                done => return done,
            }
        }
        pull(&self.client, &self.auth).await
    }

    /// A whole blob, checked against its digest. Asked for as a range of all of it: the client
    /// hashes a blob sent whole as it streams in (a second pass over every byte, on the thread
    /// that receives them all), where this check is the one that names the failure.
    pub(super) async fn fetch_blob(&self, d: &Descriptor) -> Result<Vec<u8>> {
        // Grown as it comes (the size is the unsigned manifest's), each part written where it
        // belongs: an answer starts where what came before ends, or at 0 where the registry
        // sends the whole blob again.
        let mut bytes = Vec::with_capacity(d.size.min(64 << 20) as usize);
        let mut land = |at: u64, b: &[u8]| {
            let (at, end) = (at as usize, at as usize + b.len());
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[at..end].copy_from_slice(b);
            Ok(())
        };
        let requests = AtomicU64::new(0);
        self.stream_range(d, (0, d.size), 1, &mut land, &requests)
            .await?;
        if artifact::sha256(&bytes) != d.digest {
            return Err(Failure::new(
                Code::Corrupt,
                format!(
                    "{}: blob {} does not match its digest",
                    self.name(),
                    d.digest
                ),
            ));
        }
        Ok(bytes)
    }
}

/// The back-off after failed attempt number `attempt`: 0.25, 0.5, 1 s.
async fn pause(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(250 << (attempt - 1))).await;
}

/// Runs `build` (of the HTTP client, on a loopback registry) with the system's CA roots hidden.
/// The client library builds a second, default HTTP client besides the one configured, and that
/// one reads every certificate of the system (hundreds of files: about 8 ms of a warm restore
/// by tag). A loopback registry is spoken to in plain HTTP, so it is pointed at the one
/// throwaway certificate instead, and the variables are put back before anything else runs
/// (the launcher has no other thread yet; the restored process gets the caller's environment).
fn without_system_roots<T>(build: impl FnOnce() -> T) -> T {
    const FILE: &str = "SSL_CERT_FILE";
    const DIR: &str = "SSL_CERT_DIR";
    let pem = include_bytes!("loopback-nothing.pem");
    let Ok(roots) = crate::sys::sealable_memfd(c"thaw-roots", pem.len() as u64) else {
        return build();
    };
    if std::os::unix::fs::FileExt::write_all_at(&roots, pem, 0).is_err() {
        return build();
    }
    let saved = [FILE, DIR].map(|k| (k, std::env::var_os(k)));
    let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&roots));
    std::env::set_var(FILE, path);
    std::env::remove_var(DIR);
    let built = build();
    for (k, v) in saved {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
    built
}

/// `HOST[:PORT]/NAME[:TAG]` or `HOST[:PORT]/NAME@sha256:HEX` (tag `latest` when none), checked
/// by hand: the client's parser compiles a large regular expression on every start.
fn parse_reference(r: &str) -> Option<Reference> {
    let (host, rest) = r.split_once('/')?;
    let (name, digest) = match rest.split_once('@') {
        Some((n, d)) => {
            let hex = d.strip_prefix("sha256:")?;
            let ok = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
            (n, Some(d.to_string()).filter(|_| ok)?.into())
        }
        None => (rest, None),
    };
    let (name, tag) = match name.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (name, None),
    };
    let component = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    };
    let tag_ok = tag.is_none_or(|t| {
        !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    });
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if !(host_ok && tag_ok && name.split('/').all(component)) {
        return None;
    }
    let (host, name) = (host.to_string(), name.to_string());
    Some(match (digest, tag) {
        (Some(d), Some(t)) => Reference::with_tag_and_digest(host, name, t.into(), d),
        (Some(d), None) => Reference::with_digest(host, name, d),
        (None, t) => Reference::with_tag(host, name, t.unwrap_or("latest").into()),
    })
}

/// What [`fetch`] brought.
pub struct Fetched {
    pub digest: String,
    pub blobs: usize,
    pub bytes: u64,
}

/// Fetches the image `remote` names into `dest`, written beside it under a temporary name and
/// renamed into place only once its signature (against `trust`) and every chunk are verified.
/// Blobs the images cached in `cache` (the caller's thaw cache) hold are read from there, and the
/// working set that came with the image is kept there.
pub fn fetch(
    remote: Remote,
    dest: &Path,
    trust: &thaw_signing::TrustStore,
    cache: Option<&Path>,
) -> Result<Fetched> {
    let (m, digest) = remote.manifest()?;
    let blobs = m.layers.len();
    let images = cache
        .and_then(|c| crate::restore::working_set::own_dir(c, &["images"]))
        .map(cache::Cache::new);
    let sparse = Sparse::create(remote, &m, dest, images)?;
    // The signature first, on the head alone: an image nobody trusted signed is not fetched.
    let image = thaw::image::ImageFile::open(sparse.path())
        .and_then(|f| f.verify(trust))
        .map_err(|e| sparse.named(e))?;
    sparse.fetch_all("pulling")?;
    image.verify_payload().map_err(|e| sparse.named(e))?;
    if let (Some(c), Some(ws)) = (cache, &sparse.working_set) {
        let h = image.header();
        let cs = u64::from(h.chunk_size);
        crate::restore::working_set::install(c, &image.content_digest(), ws, h.chunk_count(), cs);
    }
    let bytes = sparse.bytes.load(Ordering::Relaxed);
    sparse.persist()?;
    Ok(Fetched {
        digest,
        blobs,
        bytes,
    })
}

/// `what: X of Y MiB` on standard error, at most ten times a second, while it is a terminal.
pub struct Progress {
    what: &'static str,
    total: u64,
    done: AtomicU64,
    shown: Option<std::sync::Mutex<std::time::Instant>>,
}

impl Progress {
    pub fn new(what: &'static str, total: u64) -> Progress {
        use std::io::IsTerminal;
        Progress {
            what,
            total,
            done: AtomicU64::new(0),
            shown: std::io::stderr()
                .is_terminal()
                .then(|| std::sync::Mutex::new(std::time::Instant::now())),
        }
    }

    /// `bytes` more are done.
    pub fn add(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let Some(last) = &self.shown else {
            return;
        };
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if done == self.total || last.elapsed() >= Duration::from_millis(100) {
            *last = std::time::Instant::now();
            let mib = |b: u64| b as f64 / 1048576.0;
            let pct = (done * 100).checked_div(self.total).unwrap_or(100);
            err!(
                "\r{}: {:.1} of {:.1} MiB ({pct}%)\x1b[K",
                self.what,
                mib(done),
                mib(self.total)
            );
        }
    }

    pub fn done(&self) {
        if self.shown.is_some() && self.done.load(Ordering::Relaxed) > 0 {
            errln!();
        }
    }
}

/// Whether the registry refused a request for want of (other) credentials: 401, or 403 and
/// 400 as some registries answer a token they do not accept.
fn refused(e: &OciDistributionError) -> bool {
    use oci_client::errors::OciErrorCode as C;
    use OciDistributionError as E;
    match e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => true,
        E::ServerError { code, .. } => matches!(code, 400 | 403),
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|x| matches!(x.code, C::Unauthorized | C::Denied)),
        _ => false,
    }
}

/// Network trouble worth another attempt: no answer, a reset connection, a server error.
fn transient(e: &OciDistributionError) -> bool {
    use OciDistributionError as E;
    match e {
        E::RequestError(r) => r.is_connect() || r.is_timeout() || r.is_request() || r.is_body(),
        E::ServerError { code, .. } => *code >= 500,
        _ => false,
    }
}

/// One line for a registry error, with its exit code: 74 when the registry cannot be reached,
/// 76 when it answers no (no such image or tag, credentials refused, a request refused).
fn failure(name: &str, what: &str, e: &OciDistributionError) -> Failure {
    use OciDistributionError as E;
    let msg = crate::exit::one_line(e);
    match e {
        E::RequestError(r) if r.is_connect() || r.is_timeout() => Failure::new(
            Code::Io,
            format!("{what} {name}: the registry cannot be reached: {msg}"),
        ),
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => Failure::new(
            Code::Registry,
            format!("{what} {name}: the registry refused the credentials: {msg}"),
        ),
        E::ImageManifestNotFoundError(_) => Failure::new(
            Code::Registry,
            format!("{name}: no such image or tag in the registry"),
        ),
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                )
            }) =>
        {
            Failure::new(
                Code::Registry,
                format!("{name}: no such image or tag in the registry"),
            )
        }
        E::DigestError(_) => Failure::new(
            Code::Corrupt,
            format!("{what} {name}: a blob does not match its digest: {msg}"),
        ),
        _ => Failure::new(Code::Registry, format!("{what} {name}: {msg}")),
    }
}

/// Credentials for `registry`: $THAW_REGISTRY_USER and $THAW_REGISTRY_PASSWORD, else the
/// entry for it in the first auth file found ($REGISTRY_AUTH_FILE,
/// $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, ~/.docker/config.json),
/// else none.
fn credentials(registry: &str, ctx: &Context) -> Result<RegistryAuth> {
    let var = |n: &str| ctx.env(n).and_then(|v| v.into_string().ok());
    if let (Some(user), Some(pass)) = (var("THAW_REGISTRY_USER"), var("THAW_REGISTRY_PASSWORD")) {
        return Ok(RegistryAuth::Basic(user, pass));
    }
    let home = var("HOME").map(PathBuf::from);
    let files = [
        var("REGISTRY_AUTH_FILE").map(PathBuf::from),
        var("XDG_RUNTIME_DIR").map(|d| Path::new(&d).join("containers/auth.json")),
        home.as_ref()
            .map(|h| h.join(".config/containers/auth.json")),
        home.as_ref().map(|h| h.join(".docker/config.json")),
    ];
    for f in files.into_iter().flatten() {
        let Ok(text) = std::fs::read(&f) else {
            continue;
        };
        return from_auth_file(&text, registry)
            .map_err(|e| Failure::new(Code::Usage, format!("{}: {e}", f.display())));
    }
    Ok(RegistryAuth::Anonymous)
}

/// The entry for `registry` in an auth.json (`{"auths": {"HOST": {"auth": base64(USER:PASS)}}}`).
fn from_auth_file(text: &[u8], registry: &str) -> std::result::Result<RegistryAuth, String> {
    use base64::Engine as _;
    let v: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("not an auth file: {e}"))?;
    let Some(entry) = v.get("auths").and_then(|a| a.get(registry)) else {
        return Ok(RegistryAuth::Anonymous);
    };
    let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) else {
        return Ok(RegistryAuth::Anonymous);
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .map_err(|e| format!("the entry for {registry} is not base64: {e}"))?;
    let raw =
        String::from_utf8(raw).map_err(|_| format!("the entry for {registry} is not text"))?;
    let (user, pass) = raw
        .split_once(':')
        .ok_or_else(|| format!("the entry for {registry} is not USER:PASSWORD"))?;
    Ok(RegistryAuth::Basic(user.into(), pass.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_files_are_told_apart() {
        assert!(is_reference("127.0.0.1:5000/team/app:v3"));
        assert!(is_reference("registry.example.com/app"));
        assert!(is_reference("localhost/app:1"));
        assert!(!is_reference("app.thaw"));
        assert!(!is_reference("images/app.thaw"), "a relative path");
        assert!(!is_reference("/tmp/app.thaw"));
    }

    #[test]
    fn references_parse_as_the_registry_names_them() {
        let r = parse_reference("127.0.0.1:5000/team/app:v3").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "team/app", Some("v3"))
        );
        assert_eq!(
            parse_reference("localhost/app").unwrap().tag(),
            Some("latest")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse_reference(&format!("reg.example.com/app@{d}")).unwrap();
        assert_eq!(r.digest(), Some(d.as_str()));
        for bad in [
            "reg/App:v1",
            "reg/app:",
            "reg/app@sha256:12",
            "reg/",
            "reg/a//b",
            "reg/app:v 1",
        ] {
            assert!(parse_reference(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn an_auth_file_entry_gives_basic_credentials() {
        let f = br#"{"auths": {"127.0.0.1:5000": {"auth": "dGVzdDpzZWNyZXQ="}}}"#;
        match from_auth_file(f, "127.0.0.1:5000").unwrap() {
            RegistryAuth::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("test", "secret")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            from_auth_file(f, "other:5000").unwrap(),
            RegistryAuth::Anonymous
        ));
        assert!(from_auth_file(b"nope", "x").is_err());
    }
}

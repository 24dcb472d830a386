//! Pushing the canary image through the registry URL its users push to: the
//! layer in `sessions` separate chunked uploads (`POST`, a `PATCH` per chunk,
//! `PUT ?digest=`, each request sent where the last `Location` said), the
//! config in one monolithic upload, then the manifest under the run's tag.
//!
//! Each session is a fresh chance for a load balancer to send one session's
//! requests to instances that do not share upload state — the
//! `BLOB_UPLOAD_UNKNOWN` failure. Every session runs even after one failed, so
//! the error says how many did; a session that failed is cancelled (`DELETE`)
//! so the registry frees it, and the error says whether that worked.
//!
//! Every request goes through the registry's [`Transport`] with the
//! repository's `pull,push` scope: a registry with `auth:` gets the configured
//! credentials, a token endpoint a push token request. Credentials that may
//! only pull are `auth_failed` naming that scope (the registry's code, such as
//! `UNAUTHORIZED` or `DENIED`, in `registry_error`): a permission to fix, not
//! a broken write path. A `Location` on another host gets no `Authorization`.

use std::sync::{Arc, Mutex};

use url::Url;

use super::image::{CanaryBlob, CanaryImage};
use crate::reason::{ProbeError, Reason};
use crate::registry::push::{self, ManifestToPush, UploadBody, UploadSession, same_origin};
use crate::registry::transport::Transport;

/// The request being made now, for a timeout to name.
#[derive(Debug, Clone, Default)]
pub struct Step(Arc<Mutex<String>>);

impl Step {
    fn set(&self, what: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = what;
    }

    pub fn get(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How one upload sends its bytes.
#[derive(Debug, Clone, Copy)]
enum Form {
    Chunked { chunk_size: u64 },
    Monolithic,
}

/// Where the push goes and how.
pub struct PushPlan<'a> {
    /// The registry's transport (its credentials and tokens).
    pub transport: &'a Transport,
    /// The registry URL users push to.
    pub base: &'a Url,
    pub repository: &'a str,
    pub sessions: usize,
    pub chunk_size: u64,
    pub step: Step,
}

/// Push the image. `warnings` collects what is worth knowing but not a failure
/// (an upload the registry sent to another host).
pub async fn push_image(
    plan: &PushPlan<'_>,
    image: &CanaryImage,
    warnings: &mut Vec<String>,
) -> Result<(), ProbeError> {
    let total = plan.sessions + 1;
    let mut uploads: Vec<(&CanaryBlob, Form)> = (0..plan.sessions)
        .map(|_| (&image.layer, Form::Chunked { chunk_size: plan.chunk_size.clamp(1, image.layer.size().max(1)) }))
        .collect();
    uploads.push((&image.config, Form::Monolithic));
    let mut failures: Vec<(usize, ProbeError)> = Vec::new();
    for (index, (blob, form)) in uploads.into_iter().enumerate() {
        let label = upload_label(index + 1, total, blob, form);
        match upload(plan, blob, form, &label, warnings).await {
            Ok(()) => {}
            Err(err) => {
                // Unreachable, refused credentials, slowed down: the next session would fare no better.
                let hopeless = err.reason != Reason::UploadFailed;
                failures.push((index + 1, err));
                if hopeless {
                    break;
                }
            }
        }
    }
    if !failures.is_empty() {
        return Err(permission_hint(combine(failures, total), plan.repository));
    }
    plan.step.set(format!("PUT manifest {}:{}", plan.repository, image.tag));
    let manifest = ManifestToPush {
        media_type: image.manifest.media_type,
        digest: image.manifest.digest,
        bytes: image.manifest.bytes.clone(),
    };
    push::push_manifest(plan.transport, plan.base, plan.repository, &image.tag, &manifest)
        .await
        .map_err(|e| permission_hint(e, plan.repository))?;
    Ok(())
}

fn upload_label(number: usize, total: usize, blob: &CanaryBlob, form: Form) -> String {
    match form {
        Form::Chunked { chunk_size } => format!(
            "upload {number} of {total} ({}, {} bytes, chunked: {} PATCH requests of up to {chunk_size} bytes)",
            blob.describe(),
            blob.size(),
            blob.size().div_ceil(chunk_size)
        ),
        Form::Monolithic => {
            format!("upload {number} of {total} ({}, {} bytes, monolithic)", blob.describe(), blob.size())
        }
    }
}

/// One upload session, start to finish; on failure the session is cancelled.
async fn upload(
    plan: &PushPlan<'_>,
    blob: &CanaryBlob,
    form: Form,
    label: &str,
    warnings: &mut Vec<String>,
) -> Result<(), ProbeError> {
    plan.step.set(format!("{label}: POST (starting the upload)"));
    let mut session =
        UploadSession::start(plan.transport, plan.base, plan.repository).await.map_err(|e| e.context(label))?;
    note_foreign(plan.base, session.location(), warnings);
    let closed = match form {
        Form::Chunked { chunk_size } => {
            let chunks = blob.size().div_ceil(chunk_size);
            for chunk in 0..chunks {
                let offset = chunk * chunk_size;
                let len = chunk_size.min(blob.size() - offset);
                let body = UploadBody::Memory(blob.bytes.slice(offset as usize..(offset + len) as usize));
                let what = format!("chunk {} of {chunks}", chunk + 1);
                plan.step.set(format!("{label}: PATCH {what}"));
                if let Err(err) = session.patch(body, len, &what).await {
                    let location = session.location().clone();
                    return Err(abandon(plan, &location, err, label).await);
                }
                note_foreign(plan.base, session.location(), warnings);
            }
            let location = session.location().clone();
            plan.step.set(format!("{label}: PUT (closing the upload)"));
            session.finish(&blob.digest, None, "PUT (closing the upload)").await.map_err(|e| (location, e))
        }
        Form::Monolithic => {
            let location = session.location().clone();
            let body = Some((UploadBody::Memory(blob.bytes.clone()), blob.size()));
            plan.step.set(format!("{label}: PUT (monolithic)"));
            session.finish(&blob.digest, body, "PUT (monolithic)").await.map_err(|e| (location, e))
        }
    };
    match closed {
        Ok(()) => Ok(()),
        Err((location, err)) => Err(abandon(plan, &location, err, label).await),
    }
}

/// A session failed at `location`: say where, say whether the upload had been
/// sent to another host, cancel the session and say whether that worked.
async fn abandon(plan: &PushPlan<'_>, location: &Url, mut err: ProbeError, label: &str) -> ProbeError {
    if !same_origin(plan.base, location) {
        // The registry itself answered (it handed out the Location): its write path is broken.
        if matches!(err.reason, Reason::ConnectError | Reason::DnsError | Reason::TlsError | Reason::Timeout) {
            err.reason = Reason::UploadFailed;
        }
        err.message.push_str(&format!(
            " (the registry's Location sent the upload to {} instead of the registry URL {})",
            origin(location),
            origin(plan.base)
        ));
    }
    plan.step.set(format!("{label}: DELETE (cancelling the upload)"));
    match push::cancel_upload(plan.transport, plan.base, plan.repository, location).await {
        Ok(()) => err.message.push_str("; the upload session was cancelled"),
        Err(cancel) => err.message.push_str(&format!(
            "; the upload session could not be cancelled ({}): the registry removes abandoned uploads itself (upload purging)",
            cancel.message
        )),
    }
    err.context(label)
}

/// One error for the whole push: the first failure (its reason and registry
/// code), how many uploads failed, and what is left behind.
fn combine(mut failures: Vec<(usize, ProbeError)>, total: usize) -> ProbeError {
    let numbers: Vec<String> = failures.iter().map(|(n, _)| n.to_string()).collect();
    let count = failures.len();
    let (_, mut first) = failures.remove(0);
    let which = if count == 1 {
        format!("upload {} of {total} failed", numbers[0])
    } else {
        format!("uploads {} of {total} failed", numbers.join(", "))
    };
    first.message.push_str(&format!(
        "; {which}; no manifest was pushed (blobs already uploaded stay unreferenced until garbage collection)"
    ));
    first
}

/// A refused push says what the credentials lack: the right to push to the canary repository.
fn permission_hint(mut err: ProbeError, repository: &str) -> ProbeError {
    if err.reason == Reason::AuthFailed {
        err.message.push_str(&format!(
            "; the canary's credentials must be allowed to push to {repository} (scope repository:{repository}:pull,push)"
        ));
    }
    err
}

/// Record, once, that the registry sends uploads to another origin than its URL.
fn note_foreign(base: &Url, location: &Url, warnings: &mut Vec<String>) {
    if same_origin(base, location) {
        return;
    }
    let note = format!(
        "the registry sends uploads to {} (another host than the registry URL {})",
        origin(location),
        origin(base)
    );
    if !warnings.contains(&note) {
        warnings.push(note);
    }
}

/// `scheme://host[:port]`, nothing that could be secret.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_error_names_every_failed_upload() {
        let first = ProbeError::new(Reason::UploadFailed, "upload 1 of 4 (layer): PATCH chunk 1 of 2: HTTP status 404")
            .with_registry_error(Some("BLOB_UPLOAD_UNKNOWN".into()));
        let second =
            ProbeError::new(Reason::UploadFailed, "upload 3 of 4 (layer): PATCH chunk 1 of 2: HTTP status 404");
        let err = combine(vec![(1, first), (3, second)], 4);
        assert_eq!(err.reason, Reason::UploadFailed);
        assert_eq!(err.registry_error.as_deref(), Some("BLOB_UPLOAD_UNKNOWN"));
        assert!(err.message.starts_with("upload 1 of 4 (layer): PATCH chunk 1 of 2"), "{}", err.message);
        assert!(err.message.contains("uploads 1, 3 of 4 failed"), "{}", err.message);
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let base = Url::parse("http://127.0.0.1:5000").unwrap();
        assert!(same_origin(&base, &Url::parse("http://127.0.0.1:5000/v2/x/blobs/uploads/u?_state=s").unwrap()));
        assert!(!same_origin(&base, &Url::parse("http://127.0.0.2:5000/v2/").unwrap()));
        assert!(!same_origin(&base, &Url::parse("https://127.0.0.1:5000/v2/").unwrap()));
        let mut warnings = Vec::new();
        note_foreign(&base, &Url::parse("http://elsewhere:1/up?_state=secret").unwrap(), &mut warnings);
        note_foreign(&base, &Url::parse("http://elsewhere:1/up2").unwrap(), &mut warnings);
        assert_eq!(warnings.len(), 1);
        assert!(!warnings[0].contains("secret") && warnings[0].contains("http://elsewhere:1"), "{warnings:?}");
    }
}

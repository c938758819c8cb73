//! `muster directory sync --ldap URL`: people and groups searched from an
//! LDAP server (LDAPS, or LDAP with StartTLS; never in the clear), mapped
//! onto the directory by `muster::directory::ldap` and written all or
//! nothing like `directory import`. The bind DN and password come from the
//! environment (`MUSTER_LDAP_BIND_DN`, `MUSTER_LDAP_PASSWORD`).

use anyhow::{Context, bail};
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use muster::directory::ldap::{LdapEntry, LdapMapping};
use muster::secret::Secret;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where and how to search.
pub struct Source {
    pub url: String,
    pub starttls: bool,
    /// PEM file of the CA that signed the server's certificate (default:
    /// the system's roots).
    pub ca_file: Option<PathBuf>,
    pub people_base: String,
    pub people_filter: String,
    pub group_base: String,
    pub group_filter: String,
    pub mapping: LdapMapping,
}

/// Entries per page of a search (the server's size limit is per page).
const PAGE: i32 = 500;
/// A server that does not answer a connection, bind or search request
/// within this is an error.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The people and group entries the source holds.
pub fn search(src: &Source) -> anyhow::Result<(Vec<LdapEntry>, Vec<LdapEntry>)> {
    let url = url_of(src)?;
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    // Both or neither: a bind DN with an empty password is an
    // unauthenticated bind (RFC 4513 5.1.2), which a server may answer
    // with an empty directory.
    let bind = match (var("MUSTER_LDAP_BIND_DN"), var("MUSTER_LDAP_PASSWORD")) {
        (Some(dn), Some(pw)) => Some((dn, Secret::new(pw))),
        (None, None) => None,
        (Some(_), None) => bail!("MUSTER_LDAP_BIND_DN is set but MUSTER_LDAP_PASSWORD is empty"),
        (None, Some(_)) => bail!("MUSTER_LDAP_PASSWORD is set but MUSTER_LDAP_BIND_DN is empty"),
    };
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(TIMEOUT)
        .set_starttls(src.starttls);
    if let Some(ca) = &src.ca_file {
        settings = settings.set_config(Arc::new(tls_config(ca)?));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url.as_str())
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        ldap3::drive!(conn);
        // (A timeout holds for the next operation only: set before each.)
        if let Some((dn, pw)) = &bind {
            ldap.with_timeout(TIMEOUT)
                .simple_bind(dn, pw.expose())
                .await
                .and_then(|r| r.success())
                .context("bind refused (MUSTER_LDAP_BIND_DN, MUSTER_LDAP_PASSWORD)")?;
        }
        let attrs = src.mapping.attributes();
        let mut out = Vec::new();
        for (base, filter) in [
            (&src.people_base, &src.people_filter),
            (&src.group_base, &src.group_filter),
        ] {
            let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
                Box::new(EntriesOnly::new()),
                Box::new(PagedResults::new(PAGE)),
            ];
            let mut stream = ldap
                .with_timeout(TIMEOUT)
                .streaming_search_with(adapters, base, Scope::Subtree, filter, attrs.clone())
                .await
                .with_context(|| format!("search of {base} for {filter}"))?;
            let mut entries = Vec::new();
            while let Some(e) = stream
                .next()
                .await
                .with_context(|| format!("search of {base}"))?
            {
                let e = SearchEntry::construct(e);
                entries.push(LdapEntry {
                    dn: e.dn,
                    attrs: e.attrs.into_iter().collect(),
                });
            }
            stream
                .finish()
                .await
                .success()
                .with_context(|| format!("search of {base} for {filter}"))?;
            out.push(entries);
        }
        let _ = ldap.unbind().await;
        let groups = out.pop().unwrap_or_default();
        let people = out.pop().unwrap_or_default();
        Ok((people, groups))
    })
}

/// The URL, refused unless the connection is encrypted.
fn url_of(src: &Source) -> anyhow::Result<String> {
    let lower = src.url.to_ascii_lowercase();
    match (lower.split_once("://").map(|(s, _)| s), src.starttls) {
        (Some("ldaps"), false) => Ok(src.url.clone()),
        (Some("ldaps"), true) => bail!("--starttls is for ldap:// URLs; ldaps:// is TLS already"),
        (Some("ldap"), true) => Ok(src.url.clone()),
        (Some("ldap"), false) => bail!(
            "{}: ldap:// sends the password in the clear; use ldaps:// or --starttls",
            src.url
        ),
        _ => bail!("{}: expected an ldaps:// or ldap:// URL", src.url),
    }
}

fn tls_config(ca: &PathBuf) -> anyhow::Result<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read {}", ca.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("{}: not a PEM certificate", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("{}: a certificate rustls cannot use", ca.display()))?;
    }
    if roots.is_empty() {
        bail!("{}: no certificate in it", ca.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

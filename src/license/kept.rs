//! The verified licenses the manager keeps between snapshots: compact, in file-name
//! order, indexed by tenant and by license id so that one change (an install, a
//! revocation, a removed file) finds what it touches without a pass over all of them.

use std::ffi::OsStr;

use super::claims::Claims;
use super::store::FileStamp;

/// A verified license as the manager keeps it: its file, and the claims that decide
/// status and grants as compact JSON, parsed again one tenant at a time when a
/// snapshot is built. About half the memory of parsed claims (with 100,000 tenants
/// that is some 35 MB).
#[derive(Debug)]
pub(super) struct Kept {
    /// The file's name in `licenses/`.
    pub(super) file: Box<OsStr>,
    /// The file version that was verified.
    pub(super) stamp: FileStamp,
    /// The tenant, the license id, then the claims JSON.
    text: Box<str>,
    /// Where the tenant and the license id end in `text`.
    tenant_end: u32,
    jti_end: u32,
}

impl Kept {
    /// Keeps `claims`, verified from version `stamp` of file `file`. The claims that
    /// only verification reads (`iss`, `sub`, `aud`) are left out.
    pub(super) fn new(file: Box<OsStr>, stamp: FileStamp, mut claims: Claims) -> Kept {
        claims.iss = None;
        claims.sub = None;
        claims.aud = Vec::new();
        let json = serde_json::to_string(&claims).expect("claims serialize");
        let text = [claims.tenant.as_str(), &claims.jti, &json].concat();
        let tenant_end = claims.tenant.len();
        let jti_end = tenant_end + claims.jti.len();
        Kept {
            file,
            stamp,
            text: text.into_boxed_str(),
            tenant_end: u32::try_from(tenant_end).unwrap_or(u32::MAX),
            jti_end: u32::try_from(jti_end).unwrap_or(u32::MAX),
        }
    }

    pub(super) fn tenant(&self) -> &str {
        &self.text[..self.tenant_end as usize]
    }

    pub(super) fn jti(&self) -> &str {
        &self.text[self.tenant_end as usize..self.jti_end as usize]
    }

    /// The kept claims, parsed.
    pub(super) fn claims(&self) -> Result<Claims, serde_json::Error> {
        serde_json::from_str(&self.text[self.jti_end as usize..])
    }
}

impl AsRef<Kept> for (Kept, bool) {
    fn as_ref(&self) -> &Kept {
        &self.0
    }
}

/// The kept licenses in file-name order, one per license id, with two indexes (4
/// bytes per license each): positions in tenant order and in license-id order.
#[derive(Debug, Default)]
pub(super) struct LicenseSet {
    files: Vec<Kept>,
    by_tenant: Vec<u32>,
    by_jti: Vec<u32>,
}

impl LicenseSet {
    /// The set of `files`, which are in file-name order with distinct license ids.
    pub(super) fn new(files: Vec<Kept>) -> LicenseSet {
        let mut set = LicenseSet {
            by_tenant: (0..files.len() as u32).collect(),
            by_jti: (0..files.len() as u32).collect(),
            files,
        };
        let files = &set.files;
        set.by_tenant.sort_by(|&a, &b| {
            (files[a as usize].tenant(), a).cmp(&(files[b as usize].tenant(), b))
        });
        set.by_jti
            .sort_by(|&a, &b| (files[a as usize].jti(), a).cmp(&(files[b as usize].jti(), b)));
        set
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.files.len()
    }

    /// Every license, in file-name order.
    #[cfg(test)]
    fn iter(&self) -> std::slice::Iter<'_, Kept> {
        self.files.iter()
    }

    /// Takes every license out, in file-name order.
    pub(super) fn take(&mut self) -> Vec<Kept> {
        self.by_tenant = Vec::new();
        self.by_jti = Vec::new();
        std::mem::take(&mut self.files)
    }

    /// The licenses of `tenant`, in file-name order.
    pub(super) fn of_tenant<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a Kept> {
        let files = &self.files;
        let start = self
            .by_tenant
            .partition_point(|&i| files[i as usize].tenant() < tenant);
        self.by_tenant[start..]
            .iter()
            .map(|&i| &files[i as usize])
            .take_while(move |k| k.tenant() == tenant)
    }

    /// The license with id `jti`, if one is kept.
    pub(super) fn with_jti(&self, jti: &str) -> Option<&Kept> {
        let files = &self.files;
        let at = self
            .by_jti
            .partition_point(|&i| files[i as usize].jti() < jti);
        self.by_jti
            .get(at)
            .map(|&i| &files[i as usize])
            .filter(|k| k.jti() == jti)
    }

    /// Every tenant with its licenses, in tenant order.
    pub(super) fn tenants(&self) -> impl Iterator<Item = (&str, Vec<&Kept>)> {
        let files = &self.files;
        self.by_tenant
            .chunk_by(move |&a, &b| files[a as usize].tenant() == files[b as usize].tenant())
            .map(move |group| {
                let kept: Vec<&Kept> = group.iter().map(|&i| &files[i as usize]).collect();
                (kept[0].tenant(), kept)
            })
    }

    /// Adds `kept`, replacing the license kept from the same file; returns the one
    /// replaced. The caller makes sure no other file keeps the same license id.
    pub(super) fn insert(&mut self, kept: Kept) -> Option<Kept> {
        let replaced = self.remove(&kept.file);
        let at = self.files.partition_point(|k| *k.file < *kept.file);
        grow(&mut self.files);
        grow(&mut self.by_tenant);
        grow(&mut self.by_jti);
        self.files.insert(at, kept);
        let at = at as u32;
        for i in self.by_tenant.iter_mut().chain(self.by_jti.iter_mut()) {
            if *i >= at {
                *i += 1;
            }
        }
        let files = &self.files;
        let new = &files[at as usize];
        let t = self
            .by_tenant
            .partition_point(|&i| (files[i as usize].tenant(), i) < (new.tenant(), at));
        self.by_tenant.insert(t, at);
        let j = self
            .by_jti
            .partition_point(|&i| (files[i as usize].jti(), i) < (new.jti(), at));
        self.by_jti.insert(j, at);
        replaced
    }

    /// Takes out the license kept from file `file`, if any.
    pub(super) fn remove(&mut self, file: &OsStr) -> Option<Kept> {
        let at = self.files.binary_search_by(|k| (*k.file).cmp(file)).ok()?;
        let at32 = at as u32;
        let files = &self.files;
        let gone = &files[at];
        let t = self
            .by_tenant
            .partition_point(|&i| (files[i as usize].tenant(), i) < (gone.tenant(), at32));
        let j = self
            .by_jti
            .partition_point(|&i| (files[i as usize].jti(), i) < (gone.jti(), at32));
        self.by_tenant.remove(t);
        self.by_jti.remove(j);
        for i in self.by_tenant.iter_mut().chain(self.by_jti.iter_mut()) {
            if *i > at32 {
                *i -= 1;
            }
        }
        Some(self.files.remove(at))
    }
}

/// Makes room for one more element in a full `list`, growing it by 1/64 rather than
/// doubling it (with 100,000 licenses doubling would leave megabytes unused).
fn grow<T>(list: &mut Vec<T>) {
    if list.len() == list.capacity() {
        list.reserve_exact(list.len() / 64 + 16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(file: &str, tenant: &str, jti: &str) -> Kept {
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "jti": jti, "tenant": tenant, "exp": 2_000_000_000i64,
        }))
        .expect("claims");
        Kept::new(OsStr::new(file).into(), 1, claims)
    }

    fn files_of(set: &LicenseSet, tenant: &str) -> Vec<String> {
        set.of_tenant(tenant)
            .map(|k| k.file.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_indexes_follow_inserts_replacements_and_removals() {
        let mut set = LicenseSet::new(vec![
            kept("a.jwt", "acme", "j1"),
            kept("b.jwt", "zeta", "j2"),
            kept("c.jwt", "acme", "j3"),
        ]);
        assert_eq!(files_of(&set, "acme"), ["a.jwt", "c.jwt"]);
        assert!(set.insert(kept("aa.jwt", "beta", "j0")).is_none());
        assert_eq!(set.len(), 4);
        assert_eq!(files_of(&set, "acme"), ["a.jwt", "c.jwt"]);
        assert_eq!(files_of(&set, "beta"), ["aa.jwt"]);
        assert_eq!(set.with_jti("j3").map(|k| k.tenant()), Some("acme"));
        assert_eq!(set.with_jti("j0").map(|k| k.tenant()), Some("beta"));
        let replaced = set
            .insert(kept("c.jwt", "zeta", "j4"))
            .expect("replaces c.jwt");
        assert_eq!(replaced.jti(), "j3");
        assert!(set.with_jti("j3").is_none());
        assert_eq!(files_of(&set, "zeta"), ["b.jwt", "c.jwt"]);
        assert_eq!(files_of(&set, "acme"), ["a.jwt"]);
        assert_eq!(
            set.remove(OsStr::new("a.jwt")).map(|k| k.jti().to_string()),
            Some("j1".into())
        );
        assert!(set.remove(OsStr::new("a.jwt")).is_none());
        assert!(files_of(&set, "acme").is_empty());
        let tenants: Vec<(&str, usize)> = set.tenants().map(|(t, k)| (t, k.len())).collect();
        assert_eq!(tenants, [("beta", 1), ("zeta", 2)]);
        let names: Vec<_> = set
            .iter()
            .map(|k| k.file.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["aa.jwt", "b.jwt", "c.jwt"]);
    }
}

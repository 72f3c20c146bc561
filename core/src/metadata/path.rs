//! Request targets → routes, the way Nova's `InstanceMetadata.lookup` resolves them
//! (nova/api/metadata/base.py; reference §C4).
//!
//! Routes are read from targets the core's one normaliser ([`crate::http::normalize_target`])
//! produced: dot segments resolved like `posixpath.normpath` (never above the root: the tree is
//! virtual), unreserved escapes decoded, absolute form reduced to its path; trailing slashes
//! don't matter here and the query is ignored. A first segment other than `ec2` or
//! `openstack` gets `ec2` put in front of it, so `/latest/…` is `/ec2/latest/…`.

use crate::http::path_segments;

/// EC2 versions Nova serves, oldest first; `latest` is the last one.
pub(crate) const EC2_VERSIONS: [&str; 9] = [
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
];

/// OpenStack metadata versions, oldest first (Nova's `OPENSTACK_VERSIONS` up to Victoria, as
/// issue 5 lists them); `latest` is the last one.
pub(crate) const OPENSTACK_VERSIONS: [&str; 9] = [
    "2012-08-10", // Folsom
    "2013-04-04", // Grizzly: random_seed, password
    "2013-10-17", // Havana: vendor_data.json
    "2015-10-15", // Liberty: project_id, network_data.json
    "2016-06-30", // Newton one: devices
    "2016-10-06", // Newton two: vendor_data2.json
    "2017-02-22", // Ocata: nic `vlan`
    "2018-08-27", // Rocky: nic `vf_trusted`
    "2020-10-14", // Victoria: dedicated_cpus
];

/// An EC2 version, as an index into [`EC2_VERSIONS`] (so versions compare by age).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ec2Version(pub(crate) u8);

impl Ec2Version {
    pub(crate) const V1_0: Ec2Version = Ec2Version(0);
    pub(crate) const V2007_01_19: Ec2Version = Ec2Version(1);
    pub(crate) const V2007_08_29: Ec2Version = Ec2Version(3);
    pub(crate) const V2007_12_15: Ec2Version = Ec2Version(5);
    pub(crate) const V2008_02_01: Ec2Version = Ec2Version(6);
    pub(crate) const V2008_09_01: Ec2Version = Ec2Version(7);
    const LATEST: Ec2Version = Ec2Version(EC2_VERSIONS.len() as u8 - 1);

    fn parse(token: &[u8]) -> Option<Ec2Version> {
        if token == b"latest" {
            return Some(Ec2Version::LATEST);
        }
        position(&EC2_VERSIONS, token).map(Ec2Version)
    }
}

/// An OpenStack version, as an index into [`OPENSTACK_VERSIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct OsVersion(pub(crate) u8);

impl OsVersion {
    pub(crate) const FOLSOM: OsVersion = OsVersion(0);
    pub(crate) const GRIZZLY: OsVersion = OsVersion(1);
    pub(crate) const HAVANA: OsVersion = OsVersion(2);
    pub(crate) const LIBERTY: OsVersion = OsVersion(3);
    pub(crate) const NEWTON_ONE: OsVersion = OsVersion(4);
    pub(crate) const NEWTON_TWO: OsVersion = OsVersion(5);
    pub(crate) const OCATA: OsVersion = OsVersion(6);
    pub(crate) const ROCKY: OsVersion = OsVersion(7);
    pub(crate) const VICTORIA: OsVersion = OsVersion(8);
    const LATEST: OsVersion = OsVersion(OPENSTACK_VERSIONS.len() as u8 - 1);

    fn parse(token: &[u8]) -> Option<OsVersion> {
        if token == b"latest" {
            return Some(OsVersion::LATEST);
        }
        position(&OPENSTACK_VERSIONS, token).map(OsVersion)
    }
}

fn position(list: &[&str], token: &[u8]) -> Option<u8> {
    list.iter()
        .position(|v| v.as_bytes() == token)
        .and_then(|i| u8::try_from(i).ok())
}

/// The files of an OpenStack version directory, in the order Nova lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OsFile {
    /// `meta_data.json` (all versions).
    MetaData,
    /// `user_data` (all versions; listed and served only when the instance has user data).
    UserData,
    /// `password` (≥ 2013-04-04).
    Password,
    /// `vendor_data.json` (≥ 2013-10-17).
    VendorData,
    /// `network_data.json` (≥ 2015-10-15).
    NetworkData,
    /// `vendor_data2.json` (≥ 2016-10-06).
    VendorData2,
}

impl OsFile {
    /// Listing order (Nova appends in this order; the listing is not sorted).
    pub(crate) const ALL: [OsFile; 6] = [
        OsFile::MetaData,
        OsFile::UserData,
        OsFile::Password,
        OsFile::VendorData,
        OsFile::NetworkData,
        OsFile::VendorData2,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            OsFile::MetaData => "meta_data.json",
            OsFile::UserData => "user_data",
            OsFile::Password => "password",
            OsFile::VendorData => "vendor_data.json",
            OsFile::NetworkData => "network_data.json",
            OsFile::VendorData2 => "vendor_data2.json",
        }
    }

    /// The version that introduced the file.
    pub(crate) fn since(self) -> OsVersion {
        match self {
            OsFile::MetaData | OsFile::UserData => OsVersion::FOLSOM,
            OsFile::Password => OsVersion::GRIZZLY,
            OsFile::VendorData => OsVersion::HAVANA,
            OsFile::NetworkData => OsVersion::LIBERTY,
            OsFile::VendorData2 => OsVersion::NEWTON_TWO,
        }
    }
}

/// Where a request target leads. Everything except [`Route::Root`] needs an identified instance
/// first (Nova checks identity before it looks at the path), so "not found" is a route too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `/`: the EC2 version list, served without identity.
    Root,
    /// `/ec2`: the EC2 version list.
    Ec2Versions,
    /// A path inside an EC2 version; `rest` are the segments after the version.
    Ec2 {
        version: Ec2Version,
        rest: Vec<&'a [u8]>,
    },
    /// `/openstack`: the OpenStack version list.
    OsVersions,
    /// `/openstack/<version>`: the files of that version.
    OsListing(OsVersion),
    /// `/openstack/<version>/<file>`, the version being new enough for the file.
    OsFile(OsVersion, OsFile),
    /// `/latest/api/token` (IMDSv2).
    Token,
    /// Nothing there; `ec2` tells whether it is under the EC2 tree (IMDSv2 rules apply).
    NotFound { ec2: bool },
}

impl Route<'_> {
    /// Whether the route is in the EC2 tree (where IMDSv2 tokens are checked).
    pub(crate) fn is_ec2(&self) -> bool {
        matches!(
            self,
            Route::Ec2Versions | Route::Ec2 { .. } | Route::Token | Route::NotFound { ec2: true }
        )
    }
}

/// Whether a normalised target (see [`crate::http::normalize_target`]) names the IMDSv2 token
/// endpoint `/latest/api/token`. The ns-proxy's token rule and the router both ask this.
pub(crate) fn is_token_target(normalized: &[u8]) -> bool {
    path_segments(normalized).eq([&b"latest"[..], b"api", b"token"])
}

/// Resolves a normalised request target (the query is ignored).
pub(crate) fn route(normalized: &[u8]) -> Route<'_> {
    if is_token_target(normalized) {
        return Route::Token;
    }
    let segs: Vec<&[u8]> = path_segments(normalized).collect();
    if segs.is_empty() {
        return Route::Root;
    }
    match segs[0] {
        b"openstack" => openstack(&segs[1..]),
        b"ec2" => ec2(&segs[1..]),
        _ => ec2(&segs),
    }
}

fn ec2<'a>(segs: &[&'a [u8]]) -> Route<'a> {
    let Some((&version, rest)) = segs.split_first() else {
        return Route::Ec2Versions;
    };
    match Ec2Version::parse(version) {
        Some(version) => Route::Ec2 {
            version,
            rest: rest.to_vec(),
        },
        None => Route::NotFound { ec2: true },
    }
}

fn openstack<'a>(segs: &[&'a [u8]]) -> Route<'a> {
    let not_found = Route::NotFound { ec2: false };
    match segs {
        [] => Route::OsVersions,
        [version] => OsVersion::parse(version).map_or(not_found, Route::OsListing),
        [version, file] => {
            let Some(version) = OsVersion::parse(version) else {
                return not_found;
            };
            OsFile::ALL
                .into_iter()
                .find(|f| f.name().as_bytes() == *file && f.since() <= version)
                .map_or(not_found, |f| Route::OsFile(version, f))
        }
        _ => not_found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::normalize_target;

    #[test]
    fn routes() {
        let latest = Ec2Version(8);
        let cases: &[(&str, Route<'static>)] = &[
            ("/", Route::Root),
            ("/?x", Route::Root),
            ("/ec2", Route::Ec2Versions),
            ("/ec2/", Route::Ec2Versions),
            (
                "/latest",
                Route::Ec2 {
                    version: latest,
                    rest: vec![],
                },
            ),
            (
                "/ec2/2009-04-04/meta-data/",
                Route::Ec2 {
                    version: latest,
                    rest: vec![b"meta-data"],
                },
            ),
            (
                "/1.0/meta-data/ami-id",
                Route::Ec2 {
                    version: Ec2Version(0),
                    rest: vec![b"meta-data", b"ami-id"],
                },
            ),
            (
                "/2016-09-02/meta-data/instance-id",
                Route::NotFound { ec2: true },
            ),
            ("/ec2/ec2/latest", Route::NotFound { ec2: true }),
            ("/latest/api/token", Route::Token),
            ("/latest/api/token/", Route::Token),
            ("/openstack", Route::OsVersions),
            ("/openstack/", Route::OsVersions),
            ("/openstack/latest", Route::OsListing(OsVersion(8))),
            ("/openstack/2012-08-10/", Route::OsListing(OsVersion(0))),
            ("/openstack/2099-01-01", Route::NotFound { ec2: false }),
            (
                "/openstack/latest/meta_data.json",
                Route::OsFile(OsVersion(8), OsFile::MetaData),
            ),
            (
                "/openstack/2013-04-04/password",
                Route::OsFile(OsVersion::GRIZZLY, OsFile::Password),
            ),
            (
                "/openstack/2012-08-10/password",
                Route::NotFound { ec2: false },
            ),
            (
                "/openstack/2015-10-15/network_data.json",
                Route::OsFile(OsVersion::LIBERTY, OsFile::NetworkData),
            ),
            (
                "/openstack/2013-10-17/network_data.json",
                Route::NotFound { ec2: false },
            ),
            (
                "/openstack/2016-06-30/vendor_data2.json",
                Route::NotFound { ec2: false },
            ),
            (
                "/openstack/latest/meta_data.json/x",
                Route::NotFound { ec2: false },
            ),
            ("/openstack/content/0000", Route::NotFound { ec2: false }),
            // Escapes of unreserved characters mean the characters (RFC 3986 §6.2.2.2), as
            // they do to Nova behind eventlet, which decodes PATH_INFO.
            (
                "/openstack/latest/%6deta_data.json",
                Route::OsFile(OsVersion(8), OsFile::MetaData),
            ),
            ("/latest/api/./token", Route::Token),
            ("/x/../latest/api/%74oken", Route::Token),
            ("http://169.254.169.254/latest/api/token", Route::Token),
            ("/..", Route::Root),
        ];
        for (target, want) in cases {
            let normalized = normalize_target(target.as_bytes()).unwrap();
            assert_eq!(route(&normalized), *want, "{target}");
        }
    }
}

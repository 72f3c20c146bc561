//! The EC2 tree (reference §C5): built once per instance with each key tagged by the version
//! that introduced it, then walked and printed per request the way Nova's `find_path_in_tree`
//! and `ec2_md_print` do.

use std::net::IpAddr;

use super::path::Ec2Version;

/// One node of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// A scalar, printed as is.
    Leaf(Vec<u8>),
    /// A list, printed one item per line; it has no children.
    List(Vec<String>),
    /// `local-ipv4` of an instance without a fixed IPv4: the request's address (Nova's
    /// `fixed_ip or self.address`).
    RequestAddress,
    /// A directory; entries sorted by key (Python's `sorted` on str = byte order of UTF-8).
    Dir(Vec<Entry>),
}

/// A named child, visible from version `since` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) since: Ec2Version,
    pub(crate) node: Node,
}

/// Nova's `_name`: a directory holding it is listed by that text instead of `key/`.
const NAME: &str = "_name";

impl Node {
    fn dir(mut entries: Vec<Entry>) -> Node {
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Node::Dir(entries)
    }

    fn child(&self, key: &[u8], v: Ec2Version) -> Option<&Node> {
        match self {
            Node::Dir(entries) => entries
                .iter()
                .find(|e| e.key.as_bytes() == key && e.since <= v)
                .map(|e| &e.node),
            _ => None,
        }
    }

    /// `ec2_md_print`: a directory lists its visible keys sorted, a sub-directory as `key/` or
    /// its `_name`, skipping `_name` itself; lines joined by `\n`, no trailing newline.
    fn print(&self, v: Ec2Version, address: Option<&str>) -> Vec<u8> {
        match self {
            Node::Leaf(bytes) => bytes.clone(),
            Node::List(items) => items.join("\n").into_bytes(),
            Node::RequestAddress => address.unwrap_or_default().as_bytes().to_vec(),
            Node::Dir(entries) => {
                let mut lines: Vec<String> = Vec::new();
                for e in entries.iter().filter(|e| e.since <= v && e.key != NAME) {
                    lines.push(match &e.node {
                        Node::Dir(_) => match e.node.child(NAME.as_bytes(), v) {
                            Some(Node::Leaf(label)) => String::from_utf8_lossy(label).into_owned(),
                            _ => format!("{}/", e.key),
                        },
                        _ => e.key.clone(),
                    });
                }
                lines.join("\n").into_bytes()
            }
        }
    }

    /// Walks `path` (segments after the version) at version `v` and prints what is there.
    pub(crate) fn lookup(
        &self,
        v: Ec2Version,
        path: &[&[u8]],
        address: Option<&str>,
    ) -> Result<Vec<u8>, ()> {
        let mut node = self;
        for seg in path {
            // A scalar or list has no children (Nova would raise KeyError, or TypeError → 500).
            node = node.child(seg, v).ok_or(())?;
        }
        Ok(node.print(v, address))
    }
}

/// The values the EC2 tree is made of, already resolved from the instance and the server's
/// configuration.
pub(crate) struct Ec2Source<'a> {
    pub(crate) ami_id: &'a str,
    pub(crate) launch_index: u32,
    pub(crate) instance_id: &'a str,
    pub(crate) hostname: &'a str,
    pub(crate) fixed_ips: &'a [IpAddr],
    pub(crate) floating_ips: &'a [IpAddr],
    pub(crate) reservation_id: &'a str,
    pub(crate) security_groups: &'a [String],
    pub(crate) keys: &'a [super::Key],
    pub(crate) instance_type: &'a str,
    pub(crate) block_device_mapping: Vec<(String, String)>,
    pub(crate) kernel_id: Option<&'a str>,
    pub(crate) ramdisk_id: Option<&'a str>,
    pub(crate) availability_zone: &'a str,
    pub(crate) user_data: Option<&'a [u8]>,
}

fn first_v4(ips: &[IpAddr]) -> Option<String> {
    ips.iter().find(|ip| ip.is_ipv4()).map(|ip| ip.to_string())
}

/// Nova's `get_ec2_metadata`, for all versions at once (keys tagged with their version).
pub(crate) fn build(s: &Ec2Source<'_>) -> Node {
    use Ec2Version as V;
    let leaf = |key: &str, since: Ec2Version, value: &str| Entry {
        key: key.to_owned(),
        since,
        node: Node::Leaf(value.as_bytes().to_vec()),
    };
    let mut md = vec![
        leaf("ami-id", V::V1_0, s.ami_id),
        leaf("ami-launch-index", V::V1_0, &s.launch_index.to_string()),
        leaf("ami-manifest-path", V::V1_0, "FIXME"),
        leaf("instance-id", V::V1_0, s.instance_id),
        leaf("hostname", V::V1_0, s.hostname),
        Entry {
            key: "local-ipv4".to_owned(),
            since: V::V1_0,
            node: match first_v4(s.fixed_ips) {
                Some(ip) => Node::Leaf(ip.into_bytes()),
                None => Node::RequestAddress,
            },
        },
        leaf("reservation-id", V::V1_0, s.reservation_id),
        Entry {
            key: "security-groups".to_owned(),
            since: V::V1_0,
            node: Node::List(s.security_groups.to_vec()),
        },
    ];
    if !s.keys.is_empty() {
        // Nova: {'0': {'_name': '0=<keyname>', 'openssh-key': <key>}}; here one per key.
        let keys = s
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| Entry {
                key: i.to_string(),
                since: V::V1_0,
                node: Node::dir(vec![
                    leaf(NAME, V::V1_0, &format!("{i}={}", k.name)),
                    leaf("openssh-key", V::V1_0, &k.data),
                ]),
            })
            .collect();
        md.push(Entry {
            key: "public-keys".to_owned(),
            since: V::V1_0,
            node: Node::dir(keys),
        });
    }
    md.push(leaf("local-hostname", V::V2007_01_19, s.hostname));
    md.push(leaf("public-hostname", V::V2007_01_19, s.hostname));
    let public_ipv4 = first_v4(s.floating_ips).unwrap_or_default();
    md.push(leaf("public-ipv4", V::V2007_01_19, &public_ipv4));
    md.push(leaf("instance-type", V::V2007_08_29, s.instance_type));
    let bdm = s
        .block_device_mapping
        .iter()
        .map(|(k, v)| leaf(k, V::V1_0, v))
        .collect();
    md.push(Entry {
        key: "block-device-mapping".to_owned(),
        since: V::V2007_12_15,
        node: Node::dir(bdm),
    });
    if let Some(kernel) = s.kernel_id.filter(|k| !k.is_empty()) {
        md.push(leaf("kernel-id", V::V2007_12_15, kernel));
    }
    if let Some(ramdisk) = s.ramdisk_id.filter(|r| !r.is_empty()) {
        md.push(leaf("ramdisk-id", V::V2007_12_15, ramdisk));
    }
    md.push(Entry {
        key: "placement".to_owned(),
        since: V::V2008_02_01,
        node: Node::dir(vec![leaf(
            "availability-zone",
            V::V1_0,
            s.availability_zone,
        )]),
    });
    md.push(leaf("instance-action", V::V2008_09_01, "none"));

    let mut top = vec![Entry {
        key: "meta-data".to_owned(),
        since: V::V1_0,
        node: Node::dir(md),
    }];
    if let Some(ud) = s.user_data {
        top.push(Entry {
            key: "user-data".to_owned(),
            since: V::V1_0,
            node: Node::Leaf(ud.to_vec()),
        });
    }
    Node::dir(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Node {
        let keys = [super::super::Key {
            name: "k".into(),
            kind: "ssh".into(),
            data: "ssh-rsa AAA".into(),
        }];
        let sgs = ["web".to_owned(), "default".to_owned()];
        build(&Ec2Source {
            ami_id: "ami-1",
            launch_index: 0,
            instance_id: "i-1",
            hostname: "h.novalocal",
            fixed_ips: &[],
            floating_ips: &[],
            reservation_id: "r-1",
            security_groups: &sgs,
            keys: &keys,
            instance_type: "m1",
            block_device_mapping: vec![("root".into(), "/dev/vda".into())],
            kernel_id: None,
            ramdisk_id: Some(""),
            availability_zone: "nova",
            user_data: None,
        })
    }

    fn get(path: &str, v: u8) -> Option<String> {
        let segs: Vec<&[u8]> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::as_bytes)
            .collect();
        tree()
            .lookup(Ec2Version(v), &segs, Some("10.9.9.9"))
            .ok()
            .map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn listing_rules() {
        assert_eq!(get("", 8).unwrap(), "meta-data/");
        assert_eq!(get("meta-data/public-keys", 0).unwrap(), "0=k");
        assert_eq!(get("meta-data/public-keys/0", 0).unwrap(), "openssh-key");
        assert_eq!(
            get("meta-data/public-keys/0/openssh-key", 0).unwrap(),
            "ssh-rsa AAA"
        );
        // Nova's find_path_in_tree finds `_name` like any key.
        assert_eq!(get("meta-data/public-keys/0/_name", 0).unwrap(), "0=k");
        assert_eq!(get("meta-data/security-groups", 0).unwrap(), "web\ndefault");
        assert_eq!(get("meta-data/local-ipv4", 0).unwrap(), "10.9.9.9");
        assert_eq!(get("meta-data/public-ipv4", 1).unwrap(), "");
    }

    #[test]
    fn versions_hide_keys() {
        assert_eq!(get("meta-data/public-ipv4", 0), None);
        assert_eq!(get("meta-data/placement/availability-zone", 5), None);
        assert_eq!(
            get("meta-data/placement/availability-zone", 6).unwrap(),
            "nova"
        );
        assert_eq!(get("meta-data/ramdisk-id", 8), None, "empty ids are absent");
        assert!(!get("meta-data", 0).unwrap().contains("instance-action"));
    }

    #[test]
    fn scalars_and_lists_have_no_children() {
        assert_eq!(get("meta-data/ami-id/x", 8), None);
        assert_eq!(get("meta-data/security-groups/web", 8), None);
        assert_eq!(get("meta-data/public-keys/0=k", 8), None);
        assert_eq!(get("user-data", 8), None);
    }
}

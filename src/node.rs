//! This node's identity, kept in the data directory: a random 128-bit id (so namespace
//! NGUIDs/UUIDs stay the same across restarts and differ between machines) and a name
//! (what placement and topology will call the node; the host name unless told).

use std::io::Write;
use std::path::Path;

use crate::daemon::{cfg_err, Failure};

/// The longest node name: a DNS name, as Kubernetes node names are.
pub const MAX_NAME_LEN: usize = 253;

/// A node's id and name, as loaded (or created) by [`load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub id: [u8; 16],
    pub name: String,
}

/// Loads the node identity from `dir`, creating what is missing. `requested` is the
/// `--node-name` flag: it names a new node, and renames an existing one (logged).
pub fn load(dir: &Path, requested: Option<&str>) -> Result<NodeIdentity, Failure> {
    if let Some(n) = requested {
        check_name(n).map_err(|why| cfg_err(format!("--node-name {n:?}: {why}")))?;
    }
    let id = node_id(dir)?;
    let path = dir.join("node-name");
    let stored = match std::fs::read_to_string(&path) {
        Ok(s) => {
            let s = s.trim().to_owned();
            match check_name(&s) {
                Ok(()) => Some(s),
                // The flag replaces what is there, good or not.
                Err(why) if requested.is_some() => {
                    tracing::warn!(file = %path.display(), content = %s, %why, "replacing an invalid node name");
                    None
                }
                Err(why) => {
                    return Err(Failure::Runtime(format!(
                        "{} holds {s:?}, which is not a node name ({why}); fix or remove it, or start with --node-name",
                        path.display()
                    )))
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(Failure::Runtime(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let name = match (requested, stored) {
        (Some(r), Some(s)) if r == s => s,
        (Some(r), Some(s)) => {
            tracing::info!(from = %s, to = %r, "node renamed (--node-name)");
            write_atomically(dir, "node-name", r)?;
            r.to_owned()
        }
        (None, Some(s)) => s,
        (r, None) => {
            let n = r.map_or_else(|| name_from_hostname(&hostname()), str::to_owned);
            write_atomically(dir, "node-name", &n)?;
            n
        }
    };
    Ok(NodeIdentity { id, name })
}

/// A node name is a DNS name: dot-separated labels of 1 to 63 lowercase letters,
/// digits and '-', each starting and ending with a letter or digit, at most
/// [`MAX_NAME_LEN`] characters in all.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("{} characters, at most {MAX_NAME_LEN}", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(format!(
            "{c:?} is not allowed (lowercase letters, digits, '-' and '.')"
        ));
    }
    for label in name.split('.') {
        let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !alnum(label.chars().next()) || !alnum(label.chars().last()) {
            return Err(format!(
                "label {label:?} must start and end with a letter or digit"
            ));
        }
        if label.len() > 63 {
            return Err(format!("label of {} characters, at most 63", label.len()));
        }
    }
    Ok(())
}

/// The default node name: the host name made into a valid node name (lowercased,
/// other characters become '-', labels trimmed to 63 characters), or "ferrox" when
/// nothing usable is left.
pub fn name_from_hostname(host: &str) -> String {
    let mapped: String = host
        .trim()
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let mut name = String::new();
    for label in mapped.split('.') {
        let label: String = label.trim_matches('-').chars().take(63).collect();
        let label = label.trim_end_matches('-');
        if label.is_empty() || name.len() + 1 + label.len() > MAX_NAME_LEN {
            continue;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(label);
    }
    if name.is_empty() {
        "ferrox".to_owned()
    } else {
        name
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default()
}

fn node_id(dir: &Path) -> Result<[u8; 16], Failure> {
    let path = dir.join("node-id");
    let parse = |s: &str| -> Option<[u8; 16]> {
        let s = s.trim();
        if s.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
        }
        Some(id)
    };
    match std::fs::read_to_string(&path) {
        Ok(s) => parse(&s).ok_or_else(|| {
            Failure::Runtime(format!(
                "{} is corrupt (expected 32 hex digits); remove it to get a new node identity",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = ferrox_bdev::random_uuid();
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            write_atomically(dir, "node-id", &hex)?;
            Ok(id)
        }
        Err(e) => Err(Failure::Runtime(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Writes `dir/file` so that a crash leaves the old content or the new, never a torn file.
fn write_atomically(dir: &Path, file: &str, text: &str) -> Result<(), Failure> {
    let path = dir.join(file);
    let tmp = dir.join(format!("{file}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| Failure::Runtime(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime_msg(f: Failure) -> String {
        match f {
            Failure::Runtime(m) => m,
            Failure::Config(c) => panic!("config error, expected runtime: {}", c.0),
        }
    }

    #[test]
    fn names_follow_dns_rules() {
        let longest = [&"x".repeat(63)[..]; 4].join(".")[..MAX_NAME_LEN].to_owned();
        for ok in [
            "a",
            "node-1",
            "rack3.zone-b",
            "0",
            &"x".repeat(63),
            &longest,
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("Node1", "'N'"),
            ("-a", "start and end"),
            ("a.", "start and end"),
            ("a..b", "start and end"),
            ("a.-b", "start and end"),
            ("a_b", "'_'"),
            ("a b", "' '"),
            (&"x".repeat(64), "at most 63"),
        ] {
            let e = check_name(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(check_name(&"x".repeat(MAX_NAME_LEN + 1))
            .unwrap_err()
            .contains("at most"));
    }

    #[test]
    fn hostnames_become_valid_names() {
        assert_eq!(name_from_hostname("Build_Host-7\n"), "build-host-7");
        assert_eq!(name_from_hostname("--"), "ferrox");
        assert_eq!(name_from_hostname(""), "ferrox");
        assert_eq!(name_from_hostname(".x."), "x");
        assert_eq!(name_from_hostname("a..-b-.c"), "a.b.c");
        let long = name_from_hostname(&"Q".repeat(400));
        assert_eq!(check_name(&long), Ok(()));
        assert_eq!(long.len(), 63);
        let many = name_from_hostname(&["abcdefghij"; 40].join("."));
        assert_eq!(check_name(&many), Ok(()));
        assert!(many.len() <= MAX_NAME_LEN);
    }

    #[test]
    fn identity_is_created_once_kept_and_renamed_on_request() {
        let d = tempfile::tempdir().unwrap();
        let first = load(d.path(), None).ok().unwrap();
        assert_eq!(check_name(&first.name), Ok(()));
        assert_eq!(load(d.path(), None).ok().unwrap(), first);

        let renamed = load(d.path(), Some("storage-7")).ok().unwrap();
        assert_eq!(renamed.id, first.id);
        assert_eq!(renamed.name, "storage-7");
        let again = load(d.path(), None).ok().unwrap();
        assert_eq!(again, renamed);
        assert_eq!(
            std::fs::read_to_string(d.path().join("node-name")).unwrap(),
            "storage-7\n"
        );
    }

    #[test]
    fn a_bad_flag_is_a_config_error_and_a_corrupt_file_a_runtime_error() {
        let d = tempfile::tempdir().unwrap();
        match load(d.path(), Some("Bad Name")) {
            Err(Failure::Config(c)) => assert!(c.0.contains("--node-name"), "{}", c.0),
            _ => panic!("--node-name 'Bad Name' accepted"),
        }
        std::fs::write(d.path().join("node-name"), "no good\n").unwrap();
        let m = runtime_msg(load(d.path(), None).err().unwrap());
        assert!(m.contains("node-name") && m.contains("no good"), "{m}");
        // The flag repairs it.
        assert_eq!(load(d.path(), Some("good")).ok().unwrap().name, "good");

        std::fs::write(d.path().join("node-id"), "zz").unwrap();
        let m = runtime_msg(load(d.path(), None).err().unwrap());
        assert!(m.contains("node-id") && m.contains("corrupt"), "{m}");
    }
}

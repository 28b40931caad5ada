//! Reads the files an operator names (the config, credential files, TLS
//! certificates and keys, the redaction key) with a size bound: a wrong path
//! (a log file, `/dev/zero`) is refused with the limit named, never read
//! whole into memory.

use std::io::Read;
use std::path::Path;

/// The config file: the embedded default with its rules is about 10 KB.
pub const CONFIG_MAX: u64 = 4 << 20;
/// A bearer token, a password or a hash key.
pub const SECRET_MAX: u64 = 64 << 10;
/// A PEM file: a CA bundle (Mozilla's is about 220 KB), a certificate chain
/// or a key.
pub const PEM_MAX: u64 = 1 << 20;

/// The bytes of `path`, refused past `max` bytes; `what` names the file in
/// errors ("config file", "forward.logs.tls.ca_file").
pub fn read(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read {what} {shown}: {e}"))?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {what} {shown}: {e}"))?;
    if buf.len() as u64 > max {
        return Err(format!(
            "{what} {shown} is larger than {max} bytes: refused (is it the right file?)"
        ));
    }
    Ok(buf)
}

/// At most the first `max` bytes of `path` (None when it cannot be read):
/// enough to tell that a file changed.
pub fn head(path: &Path, max: u64) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(max)
        .read_to_end(&mut buf)
        .ok()?;
    Some(buf)
}

/// Like [`read`], as UTF-8 text.
pub fn read_string(path: &Path, max: u64, what: &str) -> Result<String, String> {
    String::from_utf8(read(path, max, what)?)
        .map_err(|_| format!("{what} {} is not UTF-8 text", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_bound_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("token");
        std::fs::write(&p, vec![b'a'; 100]).expect("write");
        assert_eq!(
            read(&p, 100, "token file").expect("at the bound").len(),
            100
        );
        let e = read(&p, 99, "token file").expect_err("over the bound");
        assert!(
            e.contains("token file") && e.contains("larger than 99 bytes"),
            "{e}"
        );
    }

    #[test]
    fn an_endless_file_is_refused_not_read() {
        let e = read(Path::new("/dev/zero"), 1 << 10, "config file").expect_err("endless");
        assert!(e.contains("larger than 1024 bytes"), "{e}");
        assert_eq!(head(Path::new("/dev/zero"), 7).map(|b| b.len()), Some(7));
    }

    #[test]
    fn missing_and_non_utf8_files_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = read_string(&dir.path().join("nope"), 10, "config file").expect_err("missing");
        assert!(e.starts_with("cannot read config file"), "{e}");
        let p = dir.path().join("bin");
        std::fs::write(&p, [0xff, 0xfe]).expect("write");
        let e = read_string(&p, 10, "config file").expect_err("not UTF-8");
        assert!(e.contains("not UTF-8"), "{e}");
    }
}

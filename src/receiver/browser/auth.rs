//! The browser listener's optional token check
//! (`receivers.browser.auth`): with `jwt_hs256_secret_file` set, every
//! export must carry `Authorization: Bearer <JWT>`, a short-lived token the
//! back end minted for its logged-in user (examples/python-fastapi) and
//! signed with HS256 under the shared secret.
//!
//! - The algorithm is pinned to HS256: a token whose header names another
//!   (`RS256`, `none`) is refused whatever its signature.
//! - `exp` is required, checked with `clock_skew` of leeway (as is `nbf`
//!   when a token has one); `aud` is checked when `audience` is set (a token
//!   without one is then refused).
//! - The secret file (a mounted Kubernetes Secret) is re-read by a thread of
//!   its own every [`POLL`] ([`Verifier::watch`]), never in the request path:
//!   a request only clones an `Arc` of the keys in force (a lock held for a
//!   pointer copy, like [`Live`]) and computes one HMAC (two during a
//!   rotation when the token is signed with the previous secret). When the
//!   content changes, the previous secret stays accepted for
//!   `rotation_overlap` after the change was seen, then only the new one.
//! - No secret (the file unreadable, empty or too short when the verifier
//!   starts) refuses every request (`no_secret`), it never accepts them; a
//!   file that becomes unreadable later (mid-swap) keeps the secret read
//!   before.
//!
//! Refusals are counted by reason in [`AuthStats`]
//! (`geometra_sidecar_browser_unauthorized_total{reason}`).

use crate::base::values::err;
use crate::base::{ConfigError, Dur, Live};
use crate::telemetry::{kv, SelfMetrics};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Where this section sits in the config, for errors and logs.
const AT: &str = "receivers.browser.auth";

/// `receivers.browser.auth`: off unless `jwt_hs256_secret_file` is set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// The HS256 secret, a file (a mounted Secret) re-read when it changes;
    /// trailing newlines are not part of it, and it must hold at least 32
    /// bytes (RFC 7518 §3.2). Unset: no token is asked for.
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// The `aud` a token must name; unset: any (or none).
    pub audience: Option<String>,
    /// Leeway on `exp` and `nbf` for clocks that disagree (at most 5m).
    pub clock_skew: Dur,
    /// After the secret file changes, tokens signed with the previous
    /// secret are still accepted for this long (at most 24h; 0s: never).
    pub rotation_overlap: Dur,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            jwt_hs256_secret_file: None,
            audience: None,
            clock_skew: Dur(Duration::from_secs(30)),
            rotation_overlap: Dur(Duration::from_secs(600)),
        }
    }
}

/// The longest `clock_skew` accepted: beyond it `exp` means little.
const MAX_SKEW: Duration = Duration::from_secs(300);
/// The longest `rotation_overlap` accepted: a rotation that keeps the old
/// secret for longer is not one.
const MAX_OVERLAP: Duration = Duration::from_secs(86_400);

impl Auth {
    /// Whether tokens are asked for.
    pub fn enabled(&self) -> bool {
        self.jwt_hs256_secret_file.is_some()
    }

    /// Checks what serde cannot. The secret file itself is read by the
    /// verifier, not here: a config is valid before the Secret is mounted.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self
            .jwt_hs256_secret_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return err(
                &format!("{AT}.jwt_hs256_secret_file"),
                "must name a file (leave the key out to ask for no token)",
            );
        }
        match &self.audience {
            Some(a) if a.trim().is_empty() => {
                return err(
                    &format!("{AT}.audience"),
                    "must not be empty (leave the key out to accept any audience)",
                )
            }
            Some(_) if !self.enabled() => {
                return err(
                    &format!("{AT}.audience"),
                    "is set but jwt_hs256_secret_file is not: no token would be checked at all",
                )
            }
            _ => {}
        }
        if self.clock_skew.0 > MAX_SKEW {
            return err(
                &format!("{AT}.clock_skew"),
                "must be at most 5m: a longer skew keeps expired tokens working",
            );
        }
        if self.rotation_overlap.0 > MAX_OVERLAP {
            return err(
                &format!("{AT}.rotation_overlap"),
                "must be at most 24h: the previous secret must stop working some time",
            );
        }
        Ok(())
    }
}

/// Why a request was refused, in [`AuthStats`] order; answered 401.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unauthorized {
    /// no `Authorization` header
    Missing = 0,
    /// not `Bearer <token>`, not a JWT, bad base64 or JSON, `exp` missing
    /// or not a number, an algorithm the crate does not know (`none`)
    Malformed = 1,
    /// signed with another secret, or with an algorithm other than HS256
    BadSignature = 2,
    /// past `exp` (or before `nbf`) by more than the clock skew
    Expired = 3,
    /// `aud` missing or not the configured audience
    WrongAudience = 4,
    /// the sidecar has no usable secret: it refuses every request
    NoSecret = 5,
}

/// The `reason` label of each [`Unauthorized`].
pub const UNAUTHORIZED_REASONS: [&str; 6] = [
    "missing",
    "malformed",
    "bad_signature",
    "expired",
    "wrong_audience",
    "no_secret",
];

impl Unauthorized {
    pub const ALL: [Unauthorized; 6] = [
        Unauthorized::Missing,
        Unauthorized::Malformed,
        Unauthorized::BadSignature,
        Unauthorized::Expired,
        Unauthorized::WrongAudience,
        Unauthorized::NoSecret,
    ];

    /// The `reason` label.
    pub fn reason(self) -> &'static str {
        UNAUTHORIZED_REASONS[self as usize]
    }

    /// The `WWW-Authenticate` value of the 401 (RFC 6750 §3): no error code
    /// when no token was sent, `invalid_token` otherwise. The reason itself
    /// is for the sidecar's counters and logs, not for the sender.
    pub fn www_authenticate(self) -> &'static str {
        match self {
            Unauthorized::Missing | Unauthorized::NoSecret => "Bearer",
            _ => "Bearer error=\"invalid_token\"",
        }
    }
}

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// What an accepted token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`: the user the back end minted the token for, if it said.
    pub sub: Option<String>,
    /// `exp`, unix seconds.
    pub exp: u64,
}

/// The claims read from a token; a missing or non-numeric `exp` fails
/// deserialisation (malformed). NumericDate may be fractional (RFC 7519).
#[derive(Deserialize)]
struct RawClaims {
    exp: f64,
    #[serde(default)]
    nbf: Option<f64>,
    #[serde(default)]
    sub: Option<String>,
}

/// The refusals by reason (`geometra_sidecar_browser_unauthorized_total`).
#[derive(Default)]
pub struct AuthStats {
    pub unauthorized: [AtomicU64; 6],
}

impl AuthStats {
    pub fn count(&self, why: Unauthorized) {
        self.unauthorized[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, why: Unauthorized) -> u64 {
        self.unauthorized[why as usize].load(Ordering::Relaxed)
    }

    /// `geometra_sidecar_browser_unauthorized_total{reason}`, every reason
    /// observed (zeros included, so a rate works from the first refusal).
    pub fn declare(t: &SelfMetrics, stats: Arc<AuthStats>) {
        t.counter(
            "geometra_sidecar_browser_unauthorized_total",
            "Browser requests refused 401 by the token check, by reason: missing, malformed, bad_signature, expired, wrong_audience, no_secret.",
            "",
            move |o| {
                for why in Unauthorized::ALL {
                    o.observe(stats.get(why), &kv([("reason", why.reason())]));
                }
            },
        );
    }
}

/// How often [`Verifier::watch`] re-reads the secret file.
pub const POLL: Duration = Duration::from_secs(2);

/// The shortest secret accepted: the hash's output size (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// A token longer than this is refused before it is decoded (malformed):
/// the tokens the examples mint are about 200 bytes.
const MAX_TOKEN_BYTES: usize = 4096;

#[derive(Clone)]
struct Key {
    secret: Vec<u8>,
    key: DecodingKey,
}

impl Key {
    fn new(secret: Vec<u8>) -> Option<Key> {
        let key = DecodingKey::from_secret(&secret).ok()?;
        Some(Key { secret, key })
    }
}

/// The secrets in force: none until one was read; the previous one with
/// the unix second its overlap ends.
#[derive(Default)]
struct Keys {
    current: Option<Key>,
    previous: Option<(Key, u64)>,
}

/// The token check of the browser listener. Built once per config
/// ([`Verifier::start`]); shared by the listener's requests.
pub struct Verifier {
    path: PathBuf,
    validation: Validation,
    skew: u64,
    overlap: u64,
    keys: Live<Keys>,
    /// serialises refreshes; the last read error logged (logged once)
    refresh: Mutex<Option<String>>,
    stats: Arc<AuthStats>,
}

impl Verifier {
    /// The verifier of `cfg` with the secret read now (`now`: unix
    /// seconds), or None when `cfg` asks for no token. No thread: see
    /// [`Verifier::start`].
    pub fn new(cfg: &Auth, stats: Arc<AuthStats>, now: u64) -> Option<Verifier> {
        let path = cfg.jwt_hs256_secret_file.clone()?;
        let mut validation = Validation::new(Algorithm::HS256);
        // exp and nbf are checked by `verify` against its own clock (the
        // crate reads the system clock); `exp` stays required.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        match &cfg.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.set_required_spec_claims(&["exp", "aud"]);
            }
            None => validation.validate_aud = false,
        }
        let v = Verifier {
            path,
            validation,
            skew: cfg.clock_skew.0.as_secs(),
            overlap: cfg.rotation_overlap.0.as_secs(),
            keys: Live::new(Keys::default()),
            refresh: Mutex::new(None),
            stats,
        };
        v.refresh(now);
        Some(v)
    }

    /// [`Verifier::new`] now, and its secret file watched every [`POLL`]
    /// by a thread of its own, which ends once the verifier is dropped.
    /// Reads the file once (a small bounded read): call it at start-up or
    /// from the reload thread, not from an async worker.
    pub fn start(cfg: &Auth, stats: Arc<AuthStats>) -> Result<Option<Arc<Verifier>>, String> {
        let Some(v) = Verifier::new(cfg, stats, crate::base::now_secs()) else {
            return Ok(None);
        };
        let v = Arc::new(v);
        Verifier::watch(&v, POLL)?;
        Ok(Some(v))
    }

    /// Re-reads the secret file every `every` on a thread of its own until
    /// the verifier is dropped (the thread holds a weak reference).
    pub fn watch(me: &Arc<Verifier>, every: Duration) -> Result<(), String> {
        let weak: Weak<Verifier> = Arc::downgrade(me);
        std::thread::Builder::new()
            .name("browser-auth".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                let Some(v) = weak.upgrade() else { return };
                v.refresh(crate::base::now_secs());
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start the {AT} secret watcher: {e}"))
    }

    /// Reads the secret file (blocking: a thread of its own or start-up)
    /// and, when its content changed, makes it the secret in force, the
    /// previous one accepted until `now + rotation_overlap`. Returns
    /// whether it changed. An unreadable, empty or short file changes
    /// nothing: before any secret was read, every request stays refused.
    pub fn refresh(&self, now: u64) -> bool {
        let mut logged = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
        let keys = self.keys.load();
        let secret = match read_secret(&self.path) {
            Ok(s) => s,
            Err(e) => {
                if logged.as_deref() != Some(e.as_str()) {
                    if keys.current.is_some() {
                        tracing::warn!(error = %e, "{AT}: keeping the secret read before");
                    } else {
                        tracing::error!(error = %e, "{AT}: no secret: every browser request is refused (reason no_secret)");
                    }
                    *logged = Some(e);
                }
                return false;
            }
        };
        if logged.take().is_some() {
            tracing::info!("{AT}: the secret file is readable again");
        }
        if keys.current.as_ref().is_some_and(|k| k.secret == secret) {
            return false;
        }
        let Some(new) = Key::new(secret) else {
            return false;
        };
        let previous = match &keys.current {
            Some(old) if self.overlap > 0 => Some((old.clone(), now.saturating_add(self.overlap))),
            _ => None,
        };
        if keys.current.is_some() {
            tracing::info!(
                overlap_s = self.overlap,
                "{AT}: the secret changed; the previous one is accepted for the overlap"
            );
        }
        self.keys.store(Keys {
            current: Some(new),
            previous,
        });
        true
    }

    /// [`Verifier::check_at`] now.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<Claims, Unauthorized> {
        self.check_at(authorization, crate::base::now_secs())
    }

    /// Checks the `Authorization` header value of a request at `now` (unix
    /// seconds), counting a refusal by its reason. No I/O: one `Arc` clone
    /// and one HMAC (two for a previous-secret token during a rotation).
    pub fn check_at(&self, authorization: Option<&[u8]>, now: u64) -> Result<Claims, Unauthorized> {
        let r = self.verify(authorization, now);
        if let Err(why) = r {
            self.stats.count(why);
        }
        r
    }

    fn verify(&self, authorization: Option<&[u8]>, now: u64) -> Result<Claims, Unauthorized> {
        let keys = self.keys.load();
        let Some(current) = &keys.current else {
            return Err(Unauthorized::NoSecret);
        };
        let token = bearer(authorization.ok_or(Unauthorized::Missing)?)?;
        match self.decode(token, current, now) {
            Err(Unauthorized::BadSignature) => match &keys.previous {
                Some((old, until)) if now < *until => self.decode(token, old, now),
                _ => Err(Unauthorized::BadSignature),
            },
            r => r,
        }
    }

    /// The token checked against one secret: signature first (the crate),
    /// then the claims against `now`.
    fn decode(&self, token: &str, key: &Key, now: u64) -> Result<Claims, Unauthorized> {
        let data = jsonwebtoken::decode::<RawClaims>(token, &key.key, &self.validation)
            .map_err(|e| classify(e.kind()))?;
        let c = data.claims;
        let (now, skew) = (now as f64, self.skew as f64);
        if c.exp + skew < now || c.nbf.is_some_and(|nbf| nbf > now + skew) {
            return Err(Unauthorized::Expired);
        }
        Ok(Claims {
            sub: c.sub,
            exp: c.exp.max(0.0) as u64,
        })
    }
}

/// The reason of an error of `jsonwebtoken::decode`.
fn classify(kind: &ErrorKind) -> Unauthorized {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => Unauthorized::BadSignature,
        ErrorKind::InvalidAudience => Unauthorized::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => Unauthorized::WrongAudience,
        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => Unauthorized::Expired,
        _ => Unauthorized::Malformed,
    }
}

/// The token of `Bearer <token>` (the scheme in any case, RFC 9110 §11.1).
fn bearer(value: &[u8]) -> Result<&str, Unauthorized> {
    let s = std::str::from_utf8(value).map_err(|_| Unauthorized::Malformed)?;
    let (scheme, token) = s.trim().split_once(' ').ok_or(Unauthorized::Malformed)?;
    let token = token.trim_start_matches(' ');
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.len() > MAX_TOKEN_BYTES
        || token.contains(|c: char| c.is_ascii_whitespace())
    {
        return Err(Unauthorized::Malformed);
    }
    Ok(token)
}

/// The secret in the file: its bytes without trailing CR/LF, refused when
/// empty or shorter than [`MIN_SECRET_BYTES`].
fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let what = "receivers.browser.auth.jwt_hs256_secret_file";
    let mut s = crate::fsread::read(path, crate::fsread::SECRET_MAX, what)?;
    while s.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
        s.pop();
    }
    if s.is_empty() {
        return Err(format!("{what} {} is empty", path.display()));
    }
    if s.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "{what} {} holds {} bytes: an HS256 secret needs at least {MIN_SECRET_BYTES} \
             (RFC 7518 §3.2; e.g. `openssl rand -base64 48`)",
            path.display(),
            s.len()
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-first";
    const NEW_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210-second";

    fn mint_with(alg: Algorithm, secret: &[u8], claims: serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret).expect("key"),
        )
        .expect("encode")
    }

    fn mint(secret: &[u8], claims: serde_json::Value) -> String {
        mint_with(Algorithm::HS256, secret, claims)
    }

    fn bearer_of(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    /// base64url without padding, as JWTs write their parts.
    fn b64url(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    /// `token` with its header replaced by `header` (signature kept).
    fn with_header(token: &str, header: serde_json::Value) -> String {
        let mut parts = token.splitn(2, '.');
        let _ = parts.next();
        let rest = parts.next().expect("a JWT");
        format!("{}.{rest}", b64url(header.to_string().as_bytes()))
    }

    struct Setup {
        _dir: tempfile::TempDir,
        path: PathBuf,
        stats: Arc<AuthStats>,
    }

    fn setup(secret: &[u8]) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, secret).expect("write");
        Setup {
            _dir: dir,
            path,
            stats: Arc::new(AuthStats::default()),
        }
    }

    fn cfg(s: &Setup) -> Auth {
        Auth {
            jwt_hs256_secret_file: Some(s.path.clone()),
            ..Auth::default()
        }
    }

    fn verifier(s: &Setup, cfg: &Auth) -> Verifier {
        Verifier::new(cfg, s.stats.clone(), NOW).expect("enabled")
    }

    fn check(v: &Verifier, token: &str, now: u64) -> Result<Claims, Unauthorized> {
        v.check_at(Some(&bearer_of(token)), now)
    }

    #[test]
    fn a_valid_token_is_accepted_with_its_subject() {
        let s = setup(SECRET);
        let v = verifier(&s, &cfg(&s));
        let t = mint(SECRET, json!({"sub": "u1", "exp": NOW + 300}));
        let c = check(&v, &t, NOW).expect("valid");
        assert_eq!(
            c,
            Claims {
                sub: Some("u1".into()),
                exp: NOW + 300
            }
        );
        // no sub, a fractional exp (NumericDate), the scheme in lower case
        let t = mint(SECRET, json!({"exp": NOW as f64 + 60.5}));
        let got = v.check_at(Some(format!("bearer  {t}").as_bytes()), NOW);
        assert_eq!(got.map(|c| c.sub), Ok(None));
        assert!(Unauthorized::ALL.iter().all(|&w| s.stats.get(w) == 0));
    }

    #[test]
    fn a_token_minted_by_pyjwt_as_the_example_does_is_accepted() {
        // PyJWT 2.15.1, examples/python-fastapi's telemetry_token:
        // jwt.encode({"sub": "u1", "iat": NOW, "exp": NOW + 300,
        //   "aud": "geometra-sidecar"}, SECRET, algorithm="HS256")
        const PYJWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
            eyJzdWIiOiJ1MSIsImlhdCI6MTgwMDAwMDAwMCwiZXhwIjoxODAwMDAwMzAwLCJhdWQiOiJnZW9tZXRyYS1zaWRlY2FyIn0.\
            iYGDHa6Cm4FKaF2jzkEfogmblo1fM5Lj3vI3dBw24Fk";
        let s = setup(SECRET);
        let c = Auth {
            audience: Some("geometra-sidecar".into()),
            ..cfg(&s)
        };
        let v = verifier(&s, &c);
        let got = check(&v, PYJWT, NOW + 10);
        assert_eq!(
            got.map(|c| (c.sub, c.exp)),
            Ok((Some("u1".into()), NOW + 300))
        );
        assert_eq!(check(&v, PYJWT, NOW + 331), Err(Unauthorized::Expired));
    }

    #[test]
    fn no_header_is_missing() {
        let s = setup(SECRET);
        let v = verifier(&s, &cfg(&s));
        assert_eq!(v.check_at(None, NOW), Err(Unauthorized::Missing));
        assert_eq!(s.stats.get(Unauthorized::Missing), 1);
    }

    #[test]
    fn anything_but_a_bearer_jwt_is_malformed() {
        let s = setup(SECRET);
        let v = verifier(&s, &cfg(&s));
        let good = mint(SECRET, json!({"sub": "u1", "exp": NOW + 300}));
        let (h, rest) = good.split_once('.').expect("jwt");
        let no_exp = mint(SECRET, json!({"sub": "u1"}));
        let exp_text = mint(SECRET, json!({"exp": "tomorrow"}));
        let sub_number = mint(SECRET, json!({"sub": 7, "exp": NOW + 300}));
        let header_not_json = format!("{}.{rest}", b64url(b"{alg"));
        // well signed, but the payload is not JSON
        let msg = format!("{h}.{}", b64url(b"not json"));
        let key = EncodingKey::from_secret(SECRET).expect("key");
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &key, Algorithm::HS256).expect("sign");
        let payload_not_json = format!("{msg}.{sig}");
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"Bearer".to_vec(),
            b"Bearer ".to_vec(),
            format!("Basic {good}").into_bytes(),
            format!("Bearer{good}").into_bytes(),
            format!("Bearer {good} extra").into_bytes(),
            b"Bearer abc".to_vec(),
            b"Bearer a.b".to_vec(),
            b"Bearer a.b.c".to_vec(),
            bearer_of(&payload_not_json),
            format!("Bearer {good}!").into_bytes(),
            bearer_of(&header_not_json),
            bearer_of(&no_exp),
            bearer_of(&exp_text),
            bearer_of(&sub_number),
            bearer_of(&long),
            [b"Bearer ".as_slice(), &[0xff, 0xfe], good.as_bytes()].concat(),
        ];
        for c in &cases {
            assert_eq!(
                v.check_at(Some(c), NOW),
                Err(Unauthorized::Malformed),
                "{:?}",
                String::from_utf8_lossy(c)
            );
        }
        assert_eq!(s.stats.get(Unauthorized::Malformed), cases.len() as u64);
    }

    #[test]
    fn another_secret_is_a_bad_signature() {
        let s = setup(SECRET);
        let v = verifier(&s, &cfg(&s));
        let t = mint(NEW_SECRET, json!({"sub": "u1", "exp": NOW + 300}));
        assert_eq!(check(&v, &t, NOW), Err(Unauthorized::BadSignature));
        // a signature cut short, or taken from another token
        let good = mint(SECRET, json!({"sub": "u1", "exp": NOW + 300}));
        let other = mint(SECRET, json!({"sub": "u2", "exp": NOW + 300}));
        let cut = &good[..good.len() - 4];
        assert_eq!(check(&v, cut, NOW), Err(Unauthorized::BadSignature));
        let (_, sig) = other.rsplit_once('.').expect("jwt");
        let (msg, _) = good.rsplit_once('.').expect("jwt");
        let swapped = format!("{msg}.{sig}");
        assert_eq!(check(&v, &swapped, NOW), Err(Unauthorized::BadSignature));
        assert_eq!(s.stats.get(Unauthorized::BadSignature), 3);
    }

    #[test]
    fn expiry_allows_the_clock_skew_and_no_more() {
        let s = setup(SECRET);
        let v = verifier(&s, &cfg(&s)); // skew 30s
        let t = mint(SECRET, json!({"sub": "u1", "exp": NOW}));
        assert!(check(&v, &t, NOW).is_ok(), "at exp");
        assert!(check(&v, &t, NOW + 30).is_ok(), "within the skew");
        assert_eq!(check(&v, &t, NOW + 31), Err(Unauthorized::Expired));
        assert_eq!(check(&v, &t, NOW + 3600), Err(Unauthorized::Expired));
        // not before: in the future beyond the skew is refused too
        let nbf = mint(SECRET, json!({"exp": NOW + 600, "nbf": NOW + 100}));
        assert_eq!(check(&v, &nbf, NOW), Err(Unauthorized::Expired));
        assert!(check(&v, &nbf, NOW + 70).is_ok());
        // a skew of 0 means exp exactly
        let strict = Auth {
            clock_skew: Dur(Duration::ZERO),
            ..cfg(&s)
        };
        let v0 = verifier(&s, &strict);
        assert!(check(&v0, &t, NOW).is_ok());
        assert_eq!(check(&v0, &t, NOW + 1), Err(Unauthorized::Expired));
        assert_eq!(s.stats.get(Unauthorized::Expired), 4);
    }

    #[test]
    fn the_audience_is_checked_when_set() {
        let s = setup(SECRET);
        let with_aud = Auth {
            audience: Some("geometra-sidecar".into()),
            ..cfg(&s)
        };
        let v = verifier(&s, &with_aud);
        let right = mint(SECRET, json!({"aud": "geometra-sidecar", "exp": NOW + 60}));
        let among = mint(
            SECRET,
            json!({"aud": ["x", "geometra-sidecar"], "exp": NOW + 60}),
        );
        let wrong = mint(SECRET, json!({"aud": "geometra-api", "exp": NOW + 60}));
        let none = mint(SECRET, json!({"exp": NOW + 60}));
        assert!(check(&v, &right, NOW).is_ok());
        assert!(check(&v, &among, NOW).is_ok());
        assert_eq!(check(&v, &wrong, NOW), Err(Unauthorized::WrongAudience));
        assert_eq!(check(&v, &none, NOW), Err(Unauthorized::WrongAudience));
        // unset: any audience, or none
        let any = verifier(&s, &cfg(&s));
        assert!(check(&any, &wrong, NOW).is_ok());
        assert!(check(&any, &none, NOW).is_ok());
        assert_eq!(s.stats.get(Unauthorized::WrongAudience), 2);
    }

    #[test]
    fn only_hs256_is_accepted() {
        let s = setup(SECRET);
        let v = verifier(&s, &cfg(&s));
        let claims = json!({"sub": "u1", "exp": NOW + 300});
        let good = mint(SECRET, claims.clone());
        // alg none: an unsigned token, header rewritten, signature dropped
        let (msg, _) = good.rsplit_once('.').expect("jwt");
        let (_, payload) = msg.split_once('.').expect("jwt");
        let none = format!(
            "{}.{payload}.",
            b64url(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes())
        );
        assert_eq!(check(&v, &none, NOW), Err(Unauthorized::Malformed));
        let none_signed = with_header(&good, json!({"alg": "none", "typ": "JWT"}));
        assert_eq!(check(&v, &none_signed, NOW), Err(Unauthorized::Malformed));
        // RS256 named, HMAC-signed with the secret (key confusion)
        let rs = with_header(&good, json!({"alg": "RS256", "typ": "JWT"}));
        assert_eq!(check(&v, &rs, NOW), Err(Unauthorized::BadSignature));
        // another HMAC, properly signed with the right secret
        let hs384 = mint_with(Algorithm::HS384, SECRET, claims.clone());
        let hs512 = mint_with(Algorithm::HS512, SECRET, claims);
        assert_eq!(check(&v, &hs384, NOW), Err(Unauthorized::BadSignature));
        assert_eq!(check(&v, &hs512, NOW), Err(Unauthorized::BadSignature));
    }

    #[test]
    fn a_rotation_accepts_the_previous_secret_for_the_overlap_only() {
        let s = setup(SECRET);
        let v = verifier(&s, &cfg(&s)); // overlap 10m
        let old = mint(SECRET, json!({"sub": "u1", "exp": NOW + 3600}));
        let new = mint(NEW_SECRET, json!({"sub": "u1", "exp": NOW + 3600}));
        assert!(check(&v, &old, NOW).is_ok());
        assert_eq!(check(&v, &new, NOW), Err(Unauthorized::BadSignature));
        assert!(!v.refresh(NOW + 5), "unchanged file: no rotation");

        std::fs::write(&s.path, NEW_SECRET).expect("rotate");
        let seen = NOW + 100;
        assert!(v.refresh(seen));
        assert!(!v.refresh(seen + 2), "seen once");
        assert!(check(&v, &new, seen).is_ok());
        assert!(check(&v, &old, seen).is_ok(), "previous, in the overlap");
        assert!(check(&v, &old, seen + 599).is_ok(), "previous, last second");
        assert_eq!(check(&v, &old, seen + 600), Err(Unauthorized::BadSignature));
        assert!(check(&v, &new, seen + 600).is_ok());
        // a token of neither secret is refused during the overlap too
        let third = mint(
            b"another-secret-of-32-bytes-or-more!!",
            json!({"exp": NOW + 3600}),
        );
        assert_eq!(check(&v, &third, seen), Err(Unauthorized::BadSignature));
        // an expired previous-secret token is expired, not badly signed
        let old_expired = mint(SECRET, json!({"exp": NOW}));
        assert_eq!(check(&v, &old_expired, seen), Err(Unauthorized::Expired));
    }

    #[test]
    fn without_overlap_the_previous_secret_stops_at_once() {
        let s = setup(SECRET);
        let c = Auth {
            rotation_overlap: Dur(Duration::ZERO),
            ..cfg(&s)
        };
        let v = verifier(&s, &c);
        let old = mint(SECRET, json!({"exp": NOW + 3600}));
        std::fs::write(
            &s.path,
            format!("{}\n", String::from_utf8_lossy(NEW_SECRET)),
        )
        .expect("rotate");
        assert!(v.refresh(NOW));
        assert_eq!(check(&v, &old, NOW), Err(Unauthorized::BadSignature));
        let new = mint(NEW_SECRET, json!({"exp": NOW + 3600}));
        assert!(
            check(&v, &new, NOW).is_ok(),
            "the trailing newline is not part of it"
        );
    }

    #[test]
    fn without_a_secret_everything_is_refused_until_one_appears() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        let stats = Arc::new(AuthStats::default());
        let c = Auth {
            jwt_hs256_secret_file: Some(path.clone()),
            ..Auth::default()
        };
        let v = Verifier::new(&c, stats.clone(), NOW).expect("enabled");
        let t = mint(SECRET, json!({"exp": NOW + 600}));
        assert_eq!(check(&v, &t, NOW), Err(Unauthorized::NoSecret), "no file");
        assert_eq!(v.check_at(None, NOW), Err(Unauthorized::NoSecret));
        for bad in [&b"\n"[..], b"", b"short-secret\n"] {
            std::fs::write(&path, bad).expect("write");
            assert!(!v.refresh(NOW));
            assert_eq!(check(&v, &t, NOW), Err(Unauthorized::NoSecret), "{bad:?}");
        }
        assert_eq!(stats.get(Unauthorized::NoSecret), 5);
        std::fs::write(&path, [SECRET, b"\r\n"].concat()).expect("write");
        assert!(v.refresh(NOW + 1));
        assert!(check(&v, &t, NOW + 1).is_ok());
        // gone again (a Secret mid-swap): the secret read before stays
        std::fs::remove_file(&path).expect("remove");
        assert!(!v.refresh(NOW + 2));
        assert!(check(&v, &t, NOW + 2).is_ok());
    }

    #[test]
    fn the_watcher_picks_up_a_changed_file_and_ends_with_the_verifier() {
        let s = setup(SECRET);
        let v = Arc::new(verifier(&s, &cfg(&s)));
        Verifier::watch(&v, Duration::from_millis(20)).expect("thread");
        let now = crate::base::now_secs();
        let new = mint(NEW_SECRET, json!({"exp": now + 600}));
        assert_eq!(check(&v, &new, now), Err(Unauthorized::BadSignature));
        // a Kubernetes Secret update: a new file renamed over the old one
        let tmp = s.path.with_extension("new");
        std::fs::write(&tmp, NEW_SECRET).expect("write");
        std::fs::rename(&tmp, &s.path).expect("rename");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while check(&v, &new, now).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the change was not seen"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // the thread holds a strong reference only while it refreshes
        let weak = Arc::downgrade(&v);
        drop(v);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while weak.strong_count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the verifier was kept alive"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn start_asks_for_nothing_without_a_secret_file() {
        let stats = Arc::new(AuthStats::default());
        assert!(Verifier::start(&Auth::default(), stats.clone())
            .expect("no thread needed")
            .is_none());
        let s = setup(SECRET);
        let v = Verifier::start(&cfg(&s), stats)
            .expect("thread")
            .expect("enabled");
        let t = mint(SECRET, json!({"exp": crate::base::now_secs() + 60}));
        assert!(v.check(Some(&bearer_of(&t))).is_ok());
    }

    #[test]
    fn refusals_are_exposed_by_reason() {
        let s = setup(SECRET);
        let v = verifier(&s, &cfg(&s));
        let t = SelfMetrics::default();
        AuthStats::declare(&t, s.stats.clone());
        let _ = v.check_at(None, NOW);
        let _ = v.check_at(None, NOW);
        let _ = v.check_at(Some(b"Basic x"), NOW);
        let f = crate::metrics::own::families(&t);
        assert_eq!(f[0].name, "geometra_sidecar_browser_unauthorized_total");
        let got: Vec<(String, f64)> = f[0]
            .series
            .iter()
            .map(|ser| {
                let reason = f[0].labels_of(ser).map(|(_, v)| v.to_string()).collect();
                let v = match ser.point {
                    crate::metrics::snapshot::Point::Value(v) => v,
                    _ => f64::NAN,
                };
                (reason, v)
            })
            .collect();
        let mut want: Vec<(String, f64)> = UNAUTHORIZED_REASONS
            .iter()
            .map(|r| (r.to_string(), 0.0))
            .collect();
        want[0].1 = 2.0;
        want[1].1 = 1.0;
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want);
    }

    #[test]
    fn the_section_has_defaults_and_refuses_what_cannot_work() {
        let d: Auth = serde_yaml_ng::from_str("{}").expect("defaults");
        assert_eq!(d, Auth::default());
        assert!(!d.enabled());
        assert_eq!(d.clock_skew.0, Duration::from_secs(30));
        assert_eq!(d.rotation_overlap.0, Duration::from_secs(600));
        assert!(d.validate().is_ok());
        let on: Auth = serde_yaml_ng::from_str(
            "{jwt_hs256_secret_file: /s/secret, audience: geometra-sidecar, clock_skew: 1m, rotation_overlap: 1h}",
        )
        .expect("parses");
        assert!(on.enabled() && on.validate().is_ok());
        assert!(serde_yaml_ng::from_str::<Auth>("{jwt_secret: x}").is_err());
        let bad = |yaml: &str| {
            serde_yaml_ng::from_str::<Auth>(yaml)
                .expect("parses")
                .validate()
                .expect_err("refused")
                .0
        };
        let cases = [
            (
                "{jwt_hs256_secret_file: ''}",
                "receivers.browser.auth.jwt_hs256_secret_file: must name a file",
            ),
            (
                "{jwt_hs256_secret_file: /s, audience: ' '}",
                "receivers.browser.auth.audience: must not be empty",
            ),
            (
                "{audience: x}",
                "receivers.browser.auth.audience: is set but jwt_hs256_secret_file is not",
            ),
            (
                "{clock_skew: 6m}",
                "receivers.browser.auth.clock_skew: must be at most 5m",
            ),
            (
                "{rotation_overlap: 25h}",
                "receivers.browser.auth.rotation_overlap: must be at most 24h",
            ),
        ];
        for (yaml, want) in cases {
            let e = bad(yaml);
            assert!(e.starts_with(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn reasons_and_challenges() {
        assert_eq!(
            Unauthorized::ALL.map(Unauthorized::reason),
            UNAUTHORIZED_REASONS
        );
        assert_eq!(Unauthorized::Missing.www_authenticate(), "Bearer");
        assert_eq!(
            Unauthorized::Expired.www_authenticate(),
            "Bearer error=\"invalid_token\""
        );
    }
}

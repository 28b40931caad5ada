//! The `ai:` section: which GenAI semantic conventions the default rules
//! follow, and the price table (`ai.prices_file`) that turns a span's
//! tokens into `ai_cost_usd_total`.

use crate::base::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which names the GenAI token metrics take (`ai.conventions`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Conventions {
    /// The released conventions: the `gen_ai.client.token.usage` histogram
    /// (semantic-conventions v1.37 to v1.41).
    #[default]
    Released,
    /// semantic-conventions-genai PR #374: `gen_ai.client.inference.usage.*`
    /// counters instead of the token histogram (what
    /// `OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental` asks of
    /// the instrumentations).
    LatestExperimental,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AiConfig {
    pub conventions: Conventions,
    /// YAML list of `{match, input, output, cache_read_input,
    /// cache_write_input}` in USD per million tokens; the first match wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prices_file: Option<PathBuf>,
}

/// A price table file is a few hundred lines; more is the wrong file.
pub const PRICES_MAX: u64 = 1 << 20;

/// One entry of the price table (USD per million tokens).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// The model name, `*` matching any run of characters.
    #[serde(rename = "match")]
    pub pattern: String,
    pub input: f64,
    pub output: f64,
    /// Input tokens read from the provider's cache (default: `input`).
    #[serde(default)]
    pub cache_read_input: Option<f64>,
    /// Input tokens written to the provider's cache (default: `input`).
    #[serde(default)]
    pub cache_write_input: Option<f64>,
}

/// The price table in force (empty without `ai.prices_file`).
#[derive(Debug, Default, PartialEq)]
pub struct PriceTable {
    pub entries: Vec<Price>,
}

/// A span's token counts (cache reads and writes are inside `input`).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Tokens {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

impl AiConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.prices().map(|_| ())
    }

    /// The price table of `prices_file`, read and checked.
    pub fn prices(&self) -> Result<Arc<PriceTable>, ConfigError> {
        let Some(p) = &self.prices_file else {
            return Ok(Arc::default());
        };
        let key = "ai.prices_file";
        let text = crate::fsread::read_string(p, PRICES_MAX, "price table")
            .map_err(|e| ConfigError::at(key, &e))?;
        parse_prices(&text, p).map_err(|e| ConfigError::at(key, &e))
    }
}

/// Parses a price table; errors name the file, the entry and its line.
pub fn parse_prices(text: &str, path: &Path) -> Result<Arc<PriceTable>, String> {
    let shown = path.display();
    let entries: Vec<Price> = if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text)).map_err(
            |e| {
                let at = e.path().to_string();
                let inner = e.into_inner().to_string();
                // the YAML error may start with its own spelling of the path
                let inner = match inner.split_once(": ") {
                    Some((p, rest)) if p.starts_with(['.', '[']) => rest.to_string(),
                    _ => inner,
                };
                format!("{shown}: {at}: {inner}")
            },
        )?
    };
    for (i, p) in entries.iter().enumerate() {
        check_price(p)
            .map_err(|m| format!("{shown}: [{i}] (line {}): {m}", entry_line(text, i)))?;
    }
    Ok(Arc::new(PriceTable { entries }))
}

fn check_price(p: &Price) -> Result<(), String> {
    if p.pattern.is_empty() {
        return Err("`match` is empty".into());
    }
    let prices = [
        ("input", Some(p.input)),
        ("output", Some(p.output)),
        ("cache_read_input", p.cache_read_input),
        ("cache_write_input", p.cache_write_input),
    ];
    for (k, v) in prices {
        if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(format!("{k} must be USD per million tokens, 0 or more"));
        }
    }
    Ok(())
}

/// The 1-based line of the `i`th top-level `- ` item of a YAML list.
fn entry_line(text: &str, i: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with('-'))
        .nth(i)
        .map_or(0, |(n, _)| n + 1)
}

/// Whether `name` matches `pattern` (`*`: any run of characters).
pub fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = n;
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            n = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

impl PriceTable {
    /// The first entry matching the model.
    pub fn find(&self, model: &[u8]) -> Option<&Price> {
        self.entries
            .iter()
            .find(|e| glob(e.pattern.as_bytes(), model))
    }
}

impl Price {
    /// The cost in USD of these tokens: the input not read from or written
    /// to the cache at `input`, cache reads and writes at their own rates
    /// (each token priced once), output at `output`.
    pub fn cost(&self, t: Tokens) -> f64 {
        let plain = (t.input - t.cache_read - t.cache_write).max(0.0);
        let read = self.cache_read_input.unwrap_or(self.input);
        let write = self.cache_write_input.unwrap_or(self.input);
        (plain * self.input + t.cache_read * read + t.cache_write * write + t.output * self.output)
            / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars_anywhere() {
        assert!(glob(b"gpt-4o*", b"gpt-4o-mini-2024-07-18"));
        assert!(glob(b"*mini*", b"gpt-4o-mini"));
        assert!(glob(b"claude-*-4*", b"claude-sonnet-4-5"));
        assert!(!glob(b"gpt-4o", b"gpt-4o-mini"));
        assert!(!glob(b"gpt-4o*", b"gpt-4"));
        assert!(glob(b"*", b""));
    }

    #[test]
    fn cached_input_is_priced_once_at_its_own_rate() {
        let p = Price {
            pattern: "m".into(),
            input: 2.5,
            output: 10.0,
            cache_read_input: Some(1.25),
            cache_write_input: None,
        };
        let t = Tokens {
            input: 1000.0,
            output: 200.0,
            cache_read: 400.0,
            cache_write: 100.0,
        };
        // 500 plain at 2.5, 400 read at 1.25, 100 written at 2.5, 200 out at 10
        let want = (500.0 * 2.5 + 400.0 * 1.25 + 100.0 * 2.5 + 200.0 * 10.0) / 1e6;
        assert!((p.cost(t) - want).abs() < 1e-15);
    }

    #[test]
    fn a_bad_entry_is_named_with_its_line() {
        let text =
            "# prices\n- match: a\n  input: 1\n  output: 2\n- match: b\n  input: -1\n  output: 2\n";
        let e = parse_prices(text, Path::new("p.yaml")).unwrap_err();
        assert_eq!(
            e,
            "p.yaml: [1] (line 5): input must be USD per million tokens, 0 or more"
        );
        let e = parse_prices("- match: a\n  input: 1\n", Path::new("p.yaml")).unwrap_err();
        assert!(e.starts_with("p.yaml: [0]: missing field `output`"), "{e}");
    }

    #[test]
    fn the_example_table_parses_and_prices_cache_reads_lower() {
        let text = include_str!("../../examples/prices.yaml");
        let t = parse_prices(text, Path::new("examples/prices.yaml")).expect("example");
        assert!(t.entries.len() >= 10);
        let p = t.find(b"gpt-4o-mini-2024-07-18").expect("gpt-4o-mini");
        assert!(p.cache_read_input.is_some_and(|c| c < p.input));
    }

    #[test]
    fn the_first_match_wins() {
        let text = "- {match: gpt-4o-mini*, input: 0.15, output: 0.6}\n- {match: gpt-4o*, input: 2.5, output: 10}\n";
        let t = parse_prices(text, Path::new("p")).expect("table");
        assert_eq!(t.find(b"gpt-4o-mini-2024").map(|p| p.input), Some(0.15));
        assert_eq!(t.find(b"gpt-4o-2024").map(|p| p.input), Some(2.5));
        assert_eq!(t.find(b"o1"), None);
    }
}

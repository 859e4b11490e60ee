//! The outputs each source gets (`conversion.outputs`): their formats, widths and
//! qualities, and the name of each beside its source.
//!
//! Every output's key is the source's stem (its key without the extension: `p/cat` for
//! `p/cat.jpg`) followed by a suffix fixed by the output: `.webp`, `.avif`,
//! `_w640.webp`. A fixed suffix makes the name reversible: a listed key is an output of
//! stem `s` exactly when it is `s` + one of the suffixes ([`Outputs::inversions`]), which
//! is what lets a run decide every output from the listing alone. With no
//! `conversion.outputs` there is one output, the full-size WebP named as the Go server
//! names it, so Go deployments see no change.

use std::fmt;

/// An output's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    Webp,
    Avif,
}

impl Format {
    /// The extension its keys end with, and its name in the configuration.
    pub fn ext(self) -> &'static str {
        match self {
            Self::Webp => "webp",
            Self::Avif => "avif",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Webp => "image/webp",
            Self::Avif => "image/avif",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "webp" => Some(Self::Webp),
            "avif" => Some(Self::Avif),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ext())
    }
}

/// One entry of `conversion.outputs`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    pub format: Format,
    /// Resized to this width (aspect kept); never upscaled: a source no wider gets none.
    pub width: Option<u32>,
    /// Its own quality; `None`: the format's default (`conversion.quality` for WebP).
    pub quality: Option<f32>,
    /// What follows the source's stem in the output's key.
    pub suffix: String,
}

impl OutputSpec {
    /// The output's key for `source`.
    pub fn key(&self, source: &str) -> String {
        format!("{}{}", stem(source), self.suffix)
    }

    /// A short stable name: `webp`, `avif`, `webp_w640` (ledger keys, metrics labels).
    pub fn id(&self) -> String {
        match self.width {
            None => self.format.ext().to_owned(),
            Some(w) => format!("{}_w{w}", self.format.ext()),
        }
    }

    /// The Go server's one output: the full-size WebP, `p/cat.jpg` → `p/cat.webp`.
    pub fn is_go_webp(&self) -> bool {
        self.format == Format::Webp && self.width.is_none() && self.suffix == ".webp"
    }
}

/// The default name of an output, as a template.
pub fn default_template(width: Option<u32>) -> &'static str {
    if width.is_some() { "{stem}_w{width}.{format}" } else { "{stem}.{format}" }
}

/// Every output of each source, in the order configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs {
    specs: Vec<OutputSpec>,
}

impl Default for Outputs {
    /// One full-size WebP, as the Go server writes.
    fn default() -> Self {
        let webp = OutputSpec { format: Format::Webp, width: None, quality: None, suffix: ".webp".into() };
        Self { specs: vec![webp] }
    }
}

/// Why `conversion.outputs` was refused; `index` is the entry's place in the list.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OutputsError {
    #[error("conversion.outputs is empty: list at least one output, or leave it out for one WebP per source")]
    Empty,
    #[error("conversion.outputs[{index}].format must be webp or avif, got {value:?}")]
    Format { index: usize, value: String },
    #[error("conversion.outputs[{index}].width must be 1 to 16383, got {value}")]
    Width { index: usize, value: i64 },
    #[error("conversion.outputs[{index}].quality must be 0 to 100, got {value}")]
    Quality { index: usize, value: f64 },
    #[error(
        "conversion.outputs[{index}].name {template:?}: {problem} (a name is {{stem}} followed by text, with {{width}} and {{format}} where wanted, ending in .{{format}}, e.g. \"{{stem}}_w{{width}}.{{format}}\")"
    )]
    Name { index: usize, template: String, problem: &'static str },
    #[error(
        "conversion.outputs[{first}] and conversion.outputs[{second}] both write {example:?} for photos/cat.jpg: give one a width or a name of its own"
    )]
    Collision { first: usize, second: usize, example: String },
}

/// One entry as read from the configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawOutput {
    pub format: Option<String>,
    pub width: Option<i64>,
    pub quality: Option<f64>,
    pub name: Option<String>,
}

impl Outputs {
    /// Validates `conversion.outputs`; `None` (absent) is [`Outputs::default`].
    pub fn parse(raw: Option<&[RawOutput]>) -> Result<Self, OutputsError> {
        let Some(raw) = raw else { return Ok(Self::default()) };
        if raw.is_empty() {
            return Err(OutputsError::Empty);
        }
        let mut specs: Vec<OutputSpec> = Vec::with_capacity(raw.len());
        for (index, r) in raw.iter().enumerate() {
            let value = r.format.clone().unwrap_or_default();
            let format = Format::parse(&value).ok_or(OutputsError::Format { index, value })?;
            let width = match r.width {
                None => None,
                Some(w) if (1..=16383).contains(&w) => Some(w as u32),
                Some(value) => return Err(OutputsError::Width { index, value }),
            };
            let quality = match r.quality {
                None => None,
                Some(q) if (0.0..=100.0).contains(&q) => Some(q as f32),
                Some(value) => return Err(OutputsError::Quality { index, value }),
            };
            let template = r.name.clone().unwrap_or_else(|| default_template(width).to_owned());
            let suffix = suffix_of(&template, format, width).map_err(|problem| OutputsError::Name {
                index,
                template: template.clone(),
                problem,
            })?;
            if let Some(first) = specs.iter().position(|s| s.suffix == suffix) {
                let example = format!("photos/cat{suffix}");
                return Err(OutputsError::Collision { first, second: index, example });
            }
            specs.push(OutputSpec { format, width, quality, suffix });
        }
        Ok(Self { specs })
    }

    pub fn specs(&self) -> &[OutputSpec] {
        &self.specs
    }

    /// Exactly the Go server's one WebP.
    pub fn is_go_default(&self) -> bool {
        self.specs.len() == 1 && self.specs[0].is_go_webp()
    }

    /// Whether any output is of `format`.
    pub fn has(&self, format: Format) -> bool {
        self.specs.iter().any(|s| s.format == format)
    }

    /// Every (output, stem) that `key` could be an output of: `key` is `stem` + that
    /// output's suffix. Several when suffixes overlap (`cat_w640.webp` is the 640 px WebP
    /// of `cat.*` and the full WebP of `cat_w640.*`).
    pub fn inversions<'a>(&'a self, key: &'a str) -> impl Iterator<Item = (usize, &'a str)> + 'a {
        self.specs.iter().enumerate().filter_map(move |(i, s)| {
            let stem = key.strip_suffix(s.suffix.as_str())?;
            (!stem.is_empty() && !stem.ends_with('/')).then_some((i, stem))
        })
    }

    /// The ledger's key for output `spec` of `source`: the source's key for the Go
    /// server's WebP (so a Go state file reads the same), `source#id` for any other
    /// ([`crate::naming::ledger_source`] reads the source back).
    pub fn ledger_key(&self, source: &str, spec: usize) -> String {
        let s = &self.specs[spec];
        if s.is_go_webp() { source.to_owned() } else { format!("{source}#{}", s.id()) }
    }
}

/// The ledger's key for the full-size output of `source` in `format` (the API's and
/// `convert`'s): the source's own for WebP, `source#avif` for AVIF, as
/// [`Outputs::ledger_key`] names the configured ones.
pub fn full_size_ledger_key(source: &str, format: Format) -> String {
    match format {
        Format::Webp => source.to_owned(),
        other => format!("{source}#{other}"),
    }
}

pub use crate::naming::stem;

/// The fixed text a template puts after the stem, or what is wrong with it.
fn suffix_of(template: &str, format: Format, width: Option<u32>) -> Result<String, &'static str> {
    let rest = template.strip_prefix("{stem}").ok_or("it must begin with {stem}")?;
    if rest.contains("{stem}") {
        return Err("it names {stem} twice");
    }
    if rest.contains("{width}") && width.is_none() {
        return Err("it uses {width} but the output has no width");
    }
    let suffix =
        rest.replace("{format}", format.ext()).replace("{width}", &width.map_or(String::new(), |w| w.to_string()));
    if suffix.contains(['{', '}']) {
        return Err("the only placeholders are {stem}, {width} and {format}");
    }
    if suffix.contains('/') {
        return Err("an output stays in its source's folder: no / after {stem}");
    }
    if !suffix.ends_with(&format!(".{}", format.ext())) {
        return Err("it must end with the output's extension, .{format}");
    }
    Ok(suffix)
}

#[cfg(test)]
mod tests;

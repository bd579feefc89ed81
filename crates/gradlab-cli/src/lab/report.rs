//! The self-contained HTML report: inline SVG figures, no external fonts or scripts, a
//! table of contents, one section per study with its measured summary, the commands that
//! reproduce it, and links to the data behind each figure.

use anyhow::{Context, Result};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// A figure: an SVG file written by the study, its caption, and its data files.
pub struct Figure {
    /// The SVG file.
    pub svg: PathBuf,
    /// Caption.
    pub caption: String,
    /// Data behind it (relative to the report folder).
    pub data: Vec<String>,
}

/// How a claim of the lecture fared in this run's measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The measurement agrees with the claim by more than the stated margin.
    Holds,
    /// The measurement contradicts it by more than the margin.
    DoesNotHold,
    /// The difference is within the margin (the seed spread, or the stated tolerance).
    Inconclusive,
}

impl Verdict {
    /// `Holds` when `holds`, `DoesNotHold` when `fails`, else `Inconclusive`.
    pub fn from(holds: bool, fails: bool) -> Self {
        match (holds, fails) {
            (true, false) => Verdict::Holds,
            (false, true) => Verdict::DoesNotHold,
            _ => Verdict::Inconclusive,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::DoesNotHold => "does not hold",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// A claim of the lecture, the figure measured for it, and the verdict.
pub struct Claim {
    /// The claim, one line.
    pub claim: String,
    /// The measured figure behind the verdict (HTML, escaped), with the margin used.
    pub measured: String,
    /// The verdict.
    pub verdict: Verdict,
}

impl Claim {
    /// A claim with its measurement and verdict.
    pub fn new(claim: &str, measured: String, verdict: Verdict) -> Self {
        Claim {
            claim: claim.to_string(),
            measured,
            verdict,
        }
    }
}

/// One study.
pub struct Section {
    /// Anchor.
    pub id: &'static str,
    /// Heading.
    pub title: String,
    /// Measured summary (HTML paragraphs, already escaped).
    pub summary: Vec<String>,
    /// A table (HTML), if any.
    pub table: Option<String>,
    /// Figures.
    pub figures: Vec<Figure>,
    /// Commands and specs that reproduce it.
    pub commands: Vec<String>,
    /// The lecture's claims this study measured (the report opens with all of them).
    pub claims: Vec<Claim>,
}

/// The report being assembled.
pub struct Report {
    title: String,
    intro: String,
    sections: Vec<Section>,
    footer: String,
    /// Why the report is incomplete (HTML), shown under the introduction.
    interrupted: Option<String>,
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An HTML table from a header and rows of already-escaped cells.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><thead><tr>");
    for h in header {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{c}</td>");
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

const STYLE: &str = r#"
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.5; }
h1 { font-size: 1.8em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
nav ol { columns: 2; } figure { margin: 1.5em 0; } figure svg { width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92em; } table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; } th:first-child, td:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; } .summary { background: #f3f8fc; border-left: 4px solid #0072b2; padding: 0.5em 1em; }
td.holds { color: #006d4f; font-weight: 600; } td.does-not-hold { color: #b3261e; font-weight: 600; } td.inconclusive { color: #7a5c00; font-weight: 600; }
table.verdicts td, table.verdicts th { text-align: left; }
.interrupted { background: #fdf3e7; border-left: 4px solid #d55e00; padding: 0.5em 1em; }
@media print { body { max-width: none; } figure { break-inside: avoid; } nav { display: none; } }
"#;

impl Report {
    /// A report with a title and an introduction (HTML).
    pub fn new(title: &str, intro: &str) -> Self {
        Report {
            title: title.to_string(),
            intro: intro.to_string(),
            sections: Vec::new(),
            footer: String::new(),
            interrupted: None,
        }
    }

    /// Marks the report as incomplete, saying why (HTML, already escaped).
    pub fn interrupted(&mut self, html: &str) {
        self.interrupted = Some(html.to_string());
    }

    /// Adds a study.
    pub fn push(&mut self, section: Section) {
        self.sections.push(section);
    }

    /// Text at the bottom.
    pub fn footer(&mut self, text: &str) {
        self.footer = esc(text);
    }

    /// The verdict table (every claim of every section, linked to its section) and
    /// `data/claims.json`.
    fn verdicts(&self, h: &mut String, out: &Path) -> Result<()> {
        let claims: Vec<(&Section, &Claim)> = self
            .sections
            .iter()
            .flat_map(|s| s.claims.iter().map(move |c| (s, c)))
            .collect();
        if claims.is_empty() {
            return Ok(());
        }
        h.push_str("<section id=\"verdicts\"><h2>Verdicts</h2><table class=\"verdicts\"><thead><tr><th>claim of the lecture</th><th>measured</th><th>verdict</th><th>section</th></tr></thead><tbody>");
        for (s, c) in &claims {
            let v = c.verdict.text();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{v}</td><td><a href=\"#{}\">{}</a></td></tr>",
                esc(&c.claim),
                c.measured,
                v.replace(' ', "-"),
                s.id,
                esc(&s.title)
            );
        }
        h.push_str("</tbody></table><p>Data: <a href=\"data/claims.json\">data/claims.json</a>.</p></section>\n");
        let json: Vec<serde_json::Value> = claims
            .iter()
            .map(|(s, c)| {
                serde_json::json!({
                    "claim": c.claim,
                    "measured": strip_tags(&c.measured),
                    "verdict": c.verdict.text(),
                    "section": s.id,
                })
            })
            .collect();
        gradlab::io::write_atomic(
            &out.join("data/claims.json"),
            serde_json::to_string_pretty(&json)?.as_bytes(),
        )?;
        Ok(())
    }

    /// Writes `out/index.html` atomically and returns its path.
    pub fn write(&self, out: &Path) -> Result<PathBuf> {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1><p>{}</p>\n",
            esc(&self.title),
            esc(&self.title),
            self.intro
        );
        if let Some(why) = &self.interrupted {
            let _ = write!(
                h,
                "<p class=\"interrupted\"><strong>Incomplete.</strong> {why}</p>"
            );
        }
        self.verdicts(&mut h, out)?;
        h.push_str("<nav><h2>Contents</h2><ol>");
        for s in &self.sections {
            let _ = write!(h, "<li><a href=\"#{}\">{}</a></li>", s.id, esc(&s.title));
        }
        h.push_str("</ol></nav>\n");
        for (i, s) in self.sections.iter().enumerate() {
            let _ = write!(
                h,
                "<section id=\"{}\"><h2>{}. {}</h2>\n<div class=\"summary\">",
                s.id,
                i + 1,
                esc(&s.title)
            );
            for p in &s.summary {
                let _ = write!(h, "<p>{p}</p>");
            }
            h.push_str("</div>\n");
            if let Some(t) = &s.table {
                h.push_str(t);
            }
            for f in &s.figures {
                let svg = std::fs::read_to_string(&f.svg)
                    .with_context(|| format!("reading figure {}", f.svg.display()))?;
                let svg = svg.trim_start_matches(|c| c != '<');
                let svg = match svg.find("<svg") {
                    Some(at) => &svg[at..],
                    None => anyhow::bail!("{} is not an SVG file", f.svg.display()),
                };
                let data = f
                    .data
                    .iter()
                    .map(|d| format!("<a href=\"{}\">{}</a>", esc(d), esc(d)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(
                    h,
                    "<figure>{svg}<figcaption>{}{}</figcaption></figure>",
                    esc(&f.caption),
                    if data.is_empty() {
                        String::new()
                    } else {
                        format!(" Data: {data}.")
                    }
                );
            }
            if !s.commands.is_empty() {
                h.push_str("<details open><summary>Reproduce</summary><pre>");
                for c in &s.commands {
                    let _ = writeln!(h, "{}", esc(c));
                }
                h.push_str("</pre></details>");
            }
            h.push_str("</section>\n");
        }
        let _ = writeln!(h, "<footer><p>{}</p></footer></body></html>", self.footer);
        let path = out.join("index.html");
        gradlab::io::write_atomic(&path, h.as_bytes())?;
        Ok(path)
    }
}

/// HTML to plain text: tags dropped, entities of [`esc`] undone.
fn strip_tags(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

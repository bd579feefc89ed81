//! The playground's JSON API: every number the page shows is computed here, by the library
//! (`gradlab::surface`, `gradlab::optim`, `gradlab::landscape`), never in JavaScript.
//!
//! | route | answers |
//! |---|---|
//! | `/api/functions` | the built-in surfaces: name, formula, box, minima |
//! | `/api/optimizers` | every optimizer's canonical default spec and its tunable numbers |
//! | `/api/grid` | the surface on a grid (for the map) with contour lines |
//! | `/api/surface` | optimizer paths (the rows of `gradlab surface --csv`) and their state |
//! | `/api/critical` | the Hessian at a point: eigenvalues, eigenvectors, kind, escape step |
//! | `/api/quadratic` | momentum on ½(x² + κy²): the error's eigen-components, measured and theoretical rate |

use super::state::{finite, StateSeries};
use crate::critical_cmd;
use crate::surface_cmd::parse_point;
use gradlab::landscape::critical::{analyze, classify, CriticalOptions};
use gradlab::landscape::linalg::symmetric_eigen;
use gradlab::landscape::{SurfaceHessian, SurfaceObjective};
use gradlab::optim::{Options, OPTIMIZERS};
use gradlab::spec::{self, Value as SpecValue};
use gradlab::surface::quadratic::{self, Quadratic};
use gradlab::surface::replay::{self, GradientNoise};
use gradlab::surface::{Function, SurfaceFunction, ALL};
use serde_json::{json, Map, Value};

/// Most steps per optimizer in one request.
pub const MAX_STEPS: u64 = 100_000;
/// Most optimizers in one request.
pub const MAX_OPTIMIZERS: usize = 8;
/// Most optimizer steps in one request, all optimizers together.
pub const MAX_TOTAL_STEPS: u64 = 200_000;
/// Longest query string accepted, in bytes.
pub const MAX_QUERY: usize = 16 * 1024;
/// Most grid points along a side of `/api/grid`.
pub const MAX_GRID: usize = 400;

/// A request's problem, shown to the user as `{"error": ...}` with HTTP 400.
pub type ApiResult = Result<Value, String>;

/// A parsed query string: its pairs in order, every key checked against the route's list.
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses `raw`, refusing keys outside `valid` and a query over [`MAX_QUERY`] bytes.
    pub fn parse(raw: Option<&str>, valid: &[&str]) -> Result<Self, String> {
        let raw = raw.unwrap_or("");
        if raw.len() > MAX_QUERY {
            return Err(format!(
                "the query is {} bytes long; at most {MAX_QUERY} are accepted",
                raw.len()
            ));
        }
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !valid.contains(&k.as_str())) {
            return Err(format!(
                "unknown parameter '{k}'; valid: {}",
                valid.join(", ")
            ));
        }
        Ok(Query { pairs })
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of a key given at most once.
    fn one(&self, key: &str) -> Result<Option<&str>, String> {
        match self.all(key).as_slice() {
            [] => Ok(None),
            [v] => Ok(Some(v)),
            _ => Err(format!("'{key}' is given more than once")),
        }
    }

    fn required(&self, key: &str, example: &str) -> Result<&str, String> {
        self.one(key)?
            .ok_or_else(|| format!("'{key}' is missing (for example {key}={example})"))
    }

    /// A number in `[lo, hi]`, or `default` when absent.
    fn number(&self, key: &str, default: f64, lo: f64, hi: f64) -> Result<f64, String> {
        let Some(text) = self.one(key)? else {
            return Ok(default);
        };
        let v: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("'{key}={text}' is not a number"))?;
        if !(v.is_finite() && (lo..=hi).contains(&v)) {
            return Err(format!(
                "'{key}={text}' is out of range: it must be in [{lo}, {hi}]"
            ));
        }
        Ok(v)
    }

    /// A whole number in `[lo, hi]`, or `default` when absent.
    fn count(&self, key: &str, default: u64, lo: u64, hi: u64) -> Result<u64, String> {
        let Some(text) = self.one(key)? else {
            return Ok(default);
        };
        let v: u64 = text
            .trim()
            .parse()
            .map_err(|_| format!("'{key}={text}' is not a whole number"))?;
        if !(lo..=hi).contains(&v) {
            return Err(format!(
                "'{key}={text}' is out of range: it must be in [{lo}, {hi}]"
            ));
        }
        Ok(v)
    }

    /// The surface: `function=NAME` or `expression=TEXT`.
    fn function(&self) -> Result<Function, String> {
        Function::from_name_or_expression(self.one("function")?, self.one("expression")?)
            .map_err(|e| e.to_string())
    }

    fn point(&self, key: &str) -> Result<[f64; 2], String> {
        parse_point(self.required(key, "0.5,-1")?, key).map_err(|e| format!("{e:#}"))
    }

    fn bounds(&self, function: &Function) -> Result<[f64; 4], String> {
        let Some(text) = self.one("box")? else {
            return Ok(function.default_box());
        };
        let v: Vec<f64> = text
            .split(',')
            .map(|p| p.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
            .collect::<Option<Vec<_>>>()
            .filter(|v| v.len() == 4)
            .ok_or_else(|| format!("'box={text}' must be four numbers XMIN,XMAX,YMIN,YMAX"))?;
        if v[0] >= v[1] || v[2] >= v[3] {
            return Err(format!("'box={text}': need XMIN < XMAX and YMIN < YMAX"));
        }
        Ok([v[0], v[1], v[2], v[3]])
    }
}

/// Keys of the routes.
pub const SURFACE_KEYS: &[&str] = &[
    "function",
    "expression",
    "start",
    "optimizer",
    "schedule",
    "steps",
    "noise",
    "seed",
];
/// Keys of `/api/grid`.
pub const GRID_KEYS: &[&str] = &["function", "expression", "box", "n"];
/// Keys of `/api/critical`.
pub const CRITICAL_KEYS: &[&str] = &["function", "expression", "at"];
/// Keys of `/api/quadratic`.
pub const QUADRATIC_KEYS: &[&str] = &["condition", "lr", "momentum", "steps", "start"];

/// `/api/functions`.
pub fn functions() -> Value {
    json!(ALL
        .iter()
        .map(|f| json!({
            "name": f.name(),
            "formula": f.formula(),
            "box": f.default_box(),
            "minima": f.minima(),
        }))
        .collect::<Vec<_>>())
}

/// The default spec an optimizer is shown with (wrappers around Adam).
fn default_spec(name: &str) -> String {
    match name {
        "lookahead" => "lookahead(adam(lr=0.05), k=5, alpha=0.5)".into(),
        "sam" => "sam(sgd(lr=0.01, momentum=0.9), rho=0.05)".into(),
        other => other.into(),
    }
}

/// `/api/optimizers`: each optimizer's canonical spec with its defaults, and the numbers the
/// page's sliders may set (`lr`, `momentum`, `betas`, `eps`) where the optimizer takes them.
pub fn optimizers() -> Value {
    let list: Vec<Value> = OPTIMIZERS
        .iter()
        .filter_map(|name| {
            let text = default_spec(name);
            let spec = spec::parse(&text).ok()?;
            let opt = replay::optimizer_for_surface(&spec, Options::default()).ok()?;
            let canonical = opt.spec();
            let mut tunable = Map::new();
            for key in ["lr", "momentum", "betas", "eps"] {
                match canonical.get(key) {
                    Some(SpecValue::Num(v)) => {
                        tunable.insert(key.into(), json!(v));
                    }
                    Some(SpecValue::Tuple(t)) if key == "betas" && t.len() >= 2 => {
                        let nums: Vec<f64> = t
                            .iter()
                            .filter_map(|v| match v {
                                SpecValue::Num(n) => Some(*n),
                                _ => None,
                            })
                            .collect();
                        tunable.insert(key.into(), json!(nums));
                    }
                    _ => {}
                }
            }
            Some(json!({
                "name": name,
                "default": text,
                "canonical": canonical.to_string(),
                "tunable": tunable,
            }))
        })
        .collect();
    json!(list)
}

/// `/api/surface`: each optimizer's path from `start` (the rows `gradlab surface --csv`
/// writes, as `[x, y, loss]` and `lr`) and its state after every step.
pub fn surface(q: &Query) -> ApiResult {
    let function = q.function()?;
    let start = q.point("start")?;
    let steps = q.count("steps", 200, 1, MAX_STEPS)?;
    let noise = q.number("noise", 0.0, 0.0, 1e6)?;
    let seed = q.count("seed", 0, 0, u64::MAX)?;
    let texts = q.all("optimizer");
    if texts.is_empty() {
        return Err("'optimizer' is missing (for example optimizer=adam(lr=0.1)); repeat it to compare several".into());
    }
    if texts.len() > MAX_OPTIMIZERS {
        return Err(format!(
            "{} optimizers given; at most {MAX_OPTIMIZERS} per request",
            texts.len()
        ));
    }
    if steps * texts.len() as u64 > MAX_TOTAL_STEPS {
        return Err(format!(
            "{steps} steps × {} optimizers is {} steps; at most {MAX_TOTAL_STEPS} per request",
            texts.len(),
            steps * texts.len() as u64
        ));
    }
    let schedule_text = q.one("schedule")?.filter(|s| !s.trim().is_empty());
    let schedule = schedule_text
        .map(|s| spec::parse(s).map_err(|e| format!("schedule: {e}")))
        .transpose()?;
    if let Some(s) = &schedule {
        gradlab::schedule::build_from_spec(s).map_err(|e| format!("schedule: {e}"))?;
    }
    let mut runs = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let label = |e: &dyn std::fmt::Display| format!("optimizer {}: {e}", i + 1);
        let spec = spec::parse(text).map_err(|e| label(&e))?;
        let mut opt =
            replay::optimizer_for_surface(&spec, Options::default()).map_err(|e| label(&e))?;
        let mut series = StateSeries::default();
        let mut noise = GradientNoise::new(noise, seed).map_err(|e| e.to_string())?;
        let traj = replay::run_scheduled_observed(
            &function,
            start,
            opt.as_mut(),
            steps,
            schedule.as_ref(),
            Some(&mut noise),
            |_, opt| series.record(opt),
        )
        .map_err(|e| format!("schedule: {e}"))?;
        runs.push(json!({
            "optimizer": text,
            "canonical": opt.spec().to_string(),
            "points": traj.rows.iter().map(|r| [finite(r.x), finite(r.y), finite(r.loss)]).collect::<Vec<_>>(),
            "lr": traj.rows.iter().map(|r| finite(r.lr)).collect::<Vec<_>>(),
            "stopped": traj.stopped.map(|e| format!("stopped after {} of {steps} steps: {e}", traj.rows.len() - 1)),
            "state": series.to_json(),
        }));
    }
    Ok(json!({
        "function": function.label(),
        "start": start,
        "steps": steps,
        "schedule": schedule_text,
        "noise": noise,
        "seed": seed,
        "runs": runs,
    }))
}

/// `/api/grid`: the surface on an `n×n` grid over `box` (values row by row from the bottom),
/// the contour levels (log-spaced when the values span decades) and the contour lines.
pub fn grid(q: &Query) -> ApiResult {
    let function = q.function()?;
    let [x0, x1, y0, y1] = q.bounds(&function)?;
    let n = q.count("n", 120, 8, MAX_GRID as u64)? as usize;
    let (xs, ys) = (
        crate::plot::linspace(x0, x1, n),
        crate::plot::linspace(y0, y1, n),
    );
    let raw: Vec<f64> = ys
        .iter()
        .flat_map(|y| xs.iter().map(|x| function.value(*x, *y)))
        .collect();
    let top = raw
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    if !top.is_finite() {
        return Err(format!(
            "{} has no finite value in this box",
            function.label()
        ));
    }
    // Non-finite values (a logarithm of a negative number, say) are drawn as the highest.
    let mut shaded: Vec<f64> = raw
        .iter()
        .map(|v| if v.is_finite() { *v } else { top })
        .collect();
    let bands = 24;
    let (thresholds, log) = crate::plot::levels(&mut shaded, bands);
    let lines = contour::ContourBuilder::new(n, n, true)
        .x_origin(x0)
        .y_origin(y0)
        .x_step((x1 - x0) / (n - 1) as f64)
        .y_step((y1 - y0) / (n - 1) as f64)
        .lines(&shaded, &thresholds)
        .map_err(|e| format!("contouring: {e:?}"))?;
    let level_of = |v: f64| {
        thresholds
            .iter()
            .filter(|t| **t <= v)
            .count()
            .saturating_sub(1)
    };
    Ok(json!({
        "function": function.label(),
        "box": [x0, x1, y0, y1],
        "n": n,
        "values": raw.iter().map(|v| finite(*v)).collect::<Vec<_>>(),
        "band": shaded.iter().map(|v| level_of(*v)).collect::<Vec<_>>(),
        "bands": bands,
        "log_levels": log,
        "lines": lines.iter().map(|l| {
            l.geometry().0.iter().map(|ls| ls.0.iter().map(|c| [c.x, c.y]).collect::<Vec<_>>()).collect::<Vec<_>>()
        }).collect::<Vec<_>>(),
    }))
}

/// `/api/critical`: the point's loss, gradient, Hessian, eigenvalues and eigenvectors, its
/// kind (a critical point's, or "not-critical" with the curvature's kind beside it), and at a
/// saddle the escape step along the most negative curvature (`gradlab critical --at --json`).
pub fn critical(q: &Query) -> ApiResult {
    let function = q.function()?;
    let at = q.point("at")?;
    let opts = CriticalOptions::default();
    let mut op = SurfaceHessian {
        surface: &function,
        at,
    };
    let mut obj = SurfaceObjective(&function);
    let analysis = analyze(&mut op, Some(&mut obj), &at, &opts).map_err(|e| e.to_string())?;
    let h = function.hessian(at[0], at[1]);
    if !h.iter().flatten().all(|v| v.is_finite()) {
        return Err(format!(
            "the Hessian at ({}, {}) is not finite",
            at[0], at[1]
        ));
    }
    let (values, vectors) = symmetric_eigen(&[h[0][0], h[0][1], h[1][0], h[1][1]], 2);
    let mut v = critical_cmd::to_json(at, &analysis);
    v["gradient"] = json!(function.gradient(at[0], at[1]).map(finite));
    v["hessian"] = json!(h);
    v["eigenvectors"] = json!(vectors);
    v["eigenvalues"] = json!(values);
    v["curvature"] = json!(classify(&values, opts.zero_tol).to_string());
    Ok(v)
}

/// `/api/quadratic`: SGD with heavy-ball momentum (gradlab's `sgd(lr, momentum)`) on
/// ½(x² + κy²): the error's components along the two eigenvectors (the axes) step by step,
/// each one's measured rate beside the theory's, and Polyak's optimal settings.
pub fn quadratic(q: &Query) -> ApiResult {
    let condition = q.number("condition", 10.0, 1.0, 1e4)?;
    let lr = q.number("lr", 0.1, 0.0, 10.0)?;
    let momentum = q.number("momentum", 0.0, 0.0, 0.999)?;
    let steps = q.count("steps", 100, 1, 10_000)?;
    let start = match q.one("start")? {
        Some(_) => q.point("start")?,
        None => [1.0, 1.0],
    };
    let f = Quadratic { condition };
    let text = format!("sgd(lr={lr}, momentum={momentum})");
    let spec = spec::parse(&text).map_err(|e| e.to_string())?;
    let mut opt =
        replay::optimizer_for_surface(&spec, Options::default()).map_err(|e| e.to_string())?;
    let traj = replay::run(f, start, opt.as_mut(), steps, |_, _| Ok(()));
    let components: Vec<Vec<f64>> = vec![
        traj.rows.iter().map(|r| r.x).collect(),
        traj.rows.iter().map(|r| r.y).collect(),
    ];
    let (best_lr, best_momentum) = f.optimal();
    let eig = f.eigenvalues();
    Ok(json!({
        "optimizer": text,
        "condition": condition,
        "eigenvalues": eig,
        "points": traj.rows.iter().map(|r| [finite(r.x), finite(r.y), finite(r.loss)]).collect::<Vec<_>>(),
        "components": components.iter().enumerate().map(|(i, c)| json!({
            "eigenvalue": eig[i],
            "error": c.iter().map(|v| finite(*v)).collect::<Vec<_>>(),
            "rate_theory": quadratic::rate(lr, momentum, eig[i]),
            "rate_measured": quadratic::measured_rate(c),
            "envelope_theory": (0..c.len()).map(|k| finite(c[0].abs() * quadratic::rate(lr, momentum, eig[i]).powi(k as i32))).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "rate_theory": f.rate(lr, momentum),
        "optimal": {"lr": best_lr, "momentum": best_momentum, "rate": f.rate(best_lr, best_momentum)},
        "stopped": traj.stopped.map(|e| e.to_string()),
    }))
}

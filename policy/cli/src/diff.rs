//! `msp-policy diff`: where two policies decide differently.
//!
//! Both decide over the same generated observations (the engine's seeded
//! [`sample`] generator, so a seed gives the same run). Each observation
//! where they differ falls in a group named for what differs: the pair of
//! values when the action or the state differs (`action: destroy → retain`),
//! else the fields that differ (`reason, requeueAfterMs`). For each group the
//! observation closest to the `new` start is kept and shrunk further: each
//! field is reset to the start's value while the group stays the same, so
//! the example shows only what matters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use msp_policy_engine::sample::{self, Metadata, Rng};
use msp_policy_engine::{CompiledPolicy, Limits, decide_with};
use msp_policy_sdk::model::{Decision, Observation};
use serde_json::Value;

use super::cases::name;
use super::partial::{self, DEFAULT_START};

/// One side of the comparison.
pub struct Side<'a> {
    /// `name version (where from)`, for the report.
    pub label: String,
    pub name: String,
    pub compiled: &'a CompiledPolicy,
}

/// What a policy made of an observation: a decision or the kind of failure.
type Outcome = Result<Decision, &'static str>;

fn outcome(side: &Side, obs: &Observation, limits: &Limits) -> Outcome {
    decide_with(side.compiled, obs, limits).map_err(|e| e.kind())
}

/// How two outcomes differ: the group label and the other fields that
/// differ. None when they agree.
fn difference(from: &Outcome, to: &Outcome) -> Option<(String, Vec<&'static str>)> {
    let (a, b) = match (from, to) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(x), Err(y)) if x == y => return None,
        _ => {
            let show = |o: &Outcome| match o {
                Ok(_) => "ok",
                Err(kind) => kind,
            };
            return Some((
                format!("decision: {} → {}", show(from), show(to)),
                Vec::new(),
            ));
        }
    };
    let mut label = Vec::new();
    if a.action != b.action {
        label.push(format!("action: {} → {}", name(&a.action), name(&b.action)));
    }
    if a.state != b.state {
        label.push(format!("state: {} → {}", name(&a.state), name(&b.state)));
    }
    let others: Vec<&'static str> = [
        ("reason", a.reason != b.reason),
        ("requeueAfterMs", a.requeue_after_ms != b.requeue_after_ms),
        ("event", a.event != b.event),
    ]
    .into_iter()
    .filter_map(|(f, differs)| differs.then_some(f))
    .collect();
    if label.is_empty() {
        if others.is_empty() {
            return None;
        }
        return Some((others.join(", "), Vec::new()));
    }
    Some((label.join("; "), others))
}

/// Observations that differ the same way.
struct Group {
    label: String,
    count: usize,
    /// How often each other field differs too.
    also: BTreeMap<&'static str, usize>,
    /// Fields away from the start, and the observation.
    closest: (usize, Observation),
}

/// A finished comparison.
pub struct DiffRun {
    pub report: String,
    pub differs: bool,
}

/// What to generate: how many observations, from which seed, with which
/// label and annotation keys.
pub struct Generate<'a> {
    pub count: usize,
    pub seed: u64,
    pub metadata: &'a Metadata,
}

/// Runs the comparison; `examples` is a directory to write each group's
/// example to (`1.json`, `2.json` … in group order).
pub fn run(
    from: &Side,
    to: &Side,
    generate: &Generate,
    limits: &Limits,
    examples: Option<&Path>,
) -> anyhow::Result<DiffRun> {
    let Generate {
        count,
        seed,
        metadata,
    } = *generate;
    let start = partial::start(DEFAULT_START)?;
    let start_json = serde_json::to_value(&start)?;
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut differing = 0;
    for _ in 0..count {
        let obs = sample::observation_with(&mut rng, metadata);
        let Some((label, also)) =
            difference(&outcome(from, &obs, limits), &outcome(to, &obs, limits))
        else {
            continue;
        };
        differing += 1;
        let distance = partial::distance(&start_json, &serde_json::to_value(&obs)?);
        let group = groups.entry(label.clone()).or_insert_with(|| Group {
            label,
            count: 0,
            also: BTreeMap::new(),
            closest: (usize::MAX, obs.clone()),
        });
        group.count += 1;
        for f in also {
            *group.also.entry(f).or_default() += 1;
        }
        if distance < group.closest.0 {
            group.closest = (distance, obs);
        }
    }
    let decided = started.elapsed();

    let shrink_started = Instant::now();
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
    let mut examples_out = Vec::new();
    for g in &groups {
        examples_out.push(shrink(
            from,
            to,
            &g.label,
            &g.closest.1,
            &start_json,
            limits,
        )?);
    }
    let shrunk = shrink_started.elapsed();

    let mut out = String::new();
    writeln!(out, "policy diff: {} → {}", from.label, to.label)?;
    let keys = |m: &BTreeMap<String, std::collections::BTreeSet<String>>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    };
    writeln!(
        out,
        "{count} generated observations (seed {seed}; labels: {}; annotations: {}): {}",
        keys(&metadata.labels),
        keys(&metadata.annotations),
        match groups.len() {
            0 => "no differences".to_string(),
            n => format!(
                "{differing} decided differently ({:.1}%), in {n} group{}",
                percent(differing, count),
                if n == 1 { "" } else { "s" }
            ),
        }
    )?;
    for (i, (g, example)) in groups.iter().zip(&examples_out).enumerate() {
        let n = i + 1;
        writeln!(out)?;
        writeln!(
            out,
            "group {n}: {} ({} observation{}, {:.1}%)",
            g.label,
            g.count,
            if g.count == 1 { "" } else { "s" },
            percent(g.count, count)
        )?;
        if !g.also.is_empty() {
            let also: Vec<String> = g.also.iter().map(|(f, c)| format!("{f} ({c})")).collect();
            writeln!(out, "  also differs: {}", also.join(", "))?;
        }
        let patch = partial::changes(&start, example)?;
        writeln!(
            out,
            "  smallest example, as a case (start {DEFAULT_START}): {}",
            serde_json::to_string(&patch)?
        )?;
        let width = from.name.chars().count().max(to.name.chars().count()) + 1;
        for side in [from, to] {
            writeln!(
                out,
                "    {:<width$} {}",
                format!("{}:", side.name),
                show(&outcome(side, example, limits))
            )?;
        }
        writeln!(out, "  observation (policy eval --observation):")?;
        writeln!(out, "  {}", serde_json::to_string(example)?)?;
        if let Some(dir) = examples {
            let file = dir.join(format!("{n}.json"));
            std::fs::write(&file, serde_json::to_string_pretty(example)?)
                .with_context(|| format!("writing {}", file.display()))?;
            writeln!(out, "  written to {}", file.display())?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "ran in {}: 2 × {count} decisions {}, shrinking {} example{} {}",
        ms(decided + shrunk),
        ms(decided),
        groups.len(),
        if groups.len() == 1 { "" } else { "s" },
        ms(shrunk)
    )?;
    Ok(DiffRun {
        report: out,
        differs: !groups.is_empty(),
    })
}

/// Brings `obs` toward the start field by field ([`partial::steps`]),
/// keeping each change that leaves it in the same group, until a whole pass
/// changes nothing. A number the start's value does not do for is bisected
/// to the closest that does (a threshold shows as itself).
fn shrink(
    from: &Side,
    to: &Side,
    label: &str,
    obs: &Observation,
    start: &Value,
    limits: &Limits,
) -> anyhow::Result<Observation> {
    let same_group = |v: &Value| {
        serde_json::from_value::<Observation>(v.clone()).is_ok_and(|o| {
            o.possible().is_ok()
                && difference(&outcome(from, &o, limits), &outcome(to, &o, limits))
                    .is_some_and(|(l, _)| l == label)
        })
    };
    let mut current = serde_json::to_value(obs)?;
    for _ in 0..MAX_SHRINK_PASSES {
        let mut progressed = false;
        for step in partial::steps(start, &current) {
            let tried = step
                .tries
                .into_iter()
                .find_map(|v| partial::with(&current, &step.path, v).filter(|c| same_group(c)));
            if let Some(simpler) = tried {
                current = simpler;
                progressed = true;
                continue;
            }
            let Some((mut fails, mut keeps)) = step.between else {
                continue;
            };
            let was = keeps;
            while fails.abs_diff(keeps) > 1 {
                let mid = fails + (keeps - fails) / 2;
                match partial::with(&current, &step.path, mid.into()) {
                    Some(c) if same_group(&c) => keeps = mid,
                    _ => fails = mid,
                }
            }
            if keeps != was
                && let Some(c) = partial::with(&current, &step.path, keeps.into())
            {
                current = c;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    Ok(serde_json::from_value(current)?)
}

/// Passes over the fields per example; a pass that changes nothing ends
/// shrinking sooner.
const MAX_SHRINK_PASSES: usize = 20;

fn show(o: &Outcome) -> String {
    match o {
        Err(kind) => format!("error ({kind})"),
        Ok(d) => {
            let requeue = d
                .requeue_after_ms
                .map_or_else(|| "no requeue".to_string(), |ms| format!("requeue {ms} ms"));
            let event = d
                .event
                .as_ref()
                .map_or_else(|| "no event".to_string(), |e| format!("event {}", e.reason));
            format!(
                "{} {}, {requeue}, {event}: {:?}",
                name(&d.action),
                name(&d.state),
                d.reason
            )
        }
    }
}

fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use msp_policy_sdk::model::{Action, PoolState};

    fn decision(action: Action, state: PoolState, reason: &str) -> Outcome {
        Ok(Decision {
            action,
            state,
            reason: reason.into(),
            requeue_after_ms: None,
            event: None,
        })
    }

    #[test]
    fn groups_are_named_for_the_values_of_action_and_state_else_the_fields() {
        let a = decision(Action::Destroy, PoolState::Online, "x");
        let b = decision(Action::Retain, PoolState::Online, "y");
        assert_eq!(
            difference(&a, &b),
            Some(("action: destroy → retain".to_string(), vec!["reason"]))
        );
        let c = decision(Action::Destroy, PoolState::Online, "z");
        assert_eq!(difference(&a, &c), Some(("reason".to_string(), vec![])));
        assert_eq!(difference(&a, &a), None);
        assert_eq!(
            difference(&a, &Err("trap")),
            Some(("decision: ok → trap".to_string(), vec![]))
        );
        assert_eq!(difference(&Err("trap"), &Err("trap")), None);
    }
}

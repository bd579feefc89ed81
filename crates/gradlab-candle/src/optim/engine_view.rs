//! The float-type-independent view of an optimizer that the trainer and the CLI use.

use gradlab::optim;

/// The float-type-independent part of an optimizer (learning rate, momentum, state files,
/// schedules).
pub trait EngineView {
    /// Each group's learning rate and momentum as they stand (see
    /// [`gradlab::optim::Optimizer::hypers`]).
    fn hypers(&self) -> &[optim::Hyper];
    /// The values the next step reads, to write (schedules, SWA, the range test).
    fn hypers_mut(&mut self) -> &mut [optim::Hyper];
    /// Saves the state atomically.
    fn save(&self, path: &std::path::Path) -> gradlab::Result<()>;
    /// Loads a saved state.
    fn load(&mut self, path: &std::path::Path) -> gradlab::Result<()>;
    /// Canonical spec, with the learning rate as it stands.
    fn spec_string(&self) -> String;
    /// Steps taken.
    fn steps_taken(&self) -> u64;
    /// Bytes of per-element optimizer state held, as stored (this rank's, when sharded).
    fn state_bytes_held(&self) -> usize;
    /// SWATS status, if applicable.
    fn swats(&self) -> Option<Vec<optim::swats::SwitchStatus>>;
    /// What the optimizer estimates as it runs (Prodigy's `d`), see
    /// [`gradlab::optim::Optimizer::estimates`].
    fn estimates(&self) -> Vec<(&'static str, f64)>;
    /// Attaches a schedule (its first values are set at once).
    fn scheduler(&mut self, spec: &str) -> gradlab::Result<gradlab::schedule::Scheduler>;
    /// Steps a schedule.
    fn step_schedule(
        &mut self,
        s: &mut gradlab::schedule::Scheduler,
        metric: Option<f64>,
    ) -> gradlab::Result<()>;
}

impl<T: gradlab::Real> EngineView for Box<dyn optim::Optimizer<T>> {
    fn hypers(&self) -> &[optim::Hyper] {
        self.as_ref().hypers()
    }
    fn hypers_mut(&mut self) -> &mut [optim::Hyper] {
        self.as_mut().hypers_mut()
    }
    fn save(&self, path: &std::path::Path) -> gradlab::Result<()> {
        self.save_state(path)
    }
    fn load(&mut self, path: &std::path::Path) -> gradlab::Result<()> {
        self.load_state(path)
    }
    fn spec_string(&self) -> String {
        self.spec().to_string()
    }
    fn steps_taken(&self) -> u64 {
        self.steps()
    }
    fn state_bytes_held(&self) -> usize {
        self.as_ref().state_bytes()
    }
    fn swats(&self) -> Option<Vec<optim::swats::SwitchStatus>> {
        optim::swats::switch_status(self.as_ref())
    }
    fn estimates(&self) -> Vec<(&'static str, f64)> {
        self.as_ref().estimates()
    }
    fn scheduler(&mut self, spec: &str) -> gradlab::Result<gradlab::schedule::Scheduler> {
        gradlab::schedule::Scheduler::new(spec, self.as_mut())
    }
    fn step_schedule(
        &mut self,
        s: &mut gradlab::schedule::Scheduler,
        metric: Option<f64>,
    ) -> gradlab::Result<()> {
        match metric {
            Some(m) => s.step_with_metric(self.as_mut(), m),
            None => s.step(self.as_mut()),
        }
    }
}

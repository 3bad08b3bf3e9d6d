//! Rise/fall hysteresis: a pure state machine that reports flips.

/// Rise/fall hysteresis over the runs of one check. Starts down: `rise` successes are
/// needed before the first registration.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    rise: u32,
    fall: u32,
    up: bool,
    streak: u32,
}

impl Hysteresis {
    /// Starts down; `rise` and `fall` are at least 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Hysteresis {
            rise: rise.max(1),
            fall: fall.max(1),
            up: false,
            streak: 0,
        }
    }

    /// Current state.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Feeds one run's result; returns the new state when it flipped.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

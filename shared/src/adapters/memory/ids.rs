//! Seeded identifiers: the same seed gives the same ack codes.

use super::lock;
use crate::ports::IdGen;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Mutex;

pub struct SeededIds(Mutex<ChaCha8Rng>);

impl SeededIds {
    pub fn new(seed: u64) -> Self {
        SeededIds(Mutex::new(ChaCha8Rng::seed_from_u64(seed)))
    }
}

impl IdGen for SeededIds {
    fn ack_code(&self) -> String {
        format!("{:04}", lock(&self.0).random_range(1000..10000))
    }
}

//! [`Live<T>`]: a value swapped whole on reload.

use std::sync::{Arc, Mutex};

/// A value swapped whole on reload: readers clone the `Arc` once per request
/// (a lock held for a pointer copy, never per span), writers replace it.
pub struct Live<T>(Mutex<Arc<T>>);

impl<T> Live<T> {
    pub fn new(v: T) -> Self {
        Live(Mutex::new(Arc::new(v)))
    }

    /// The value in force now; a request keeps it until it is done.
    pub fn load(&self) -> Arc<T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn store(&self, v: T) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
    }
}

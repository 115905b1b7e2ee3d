//! What a guest's wasm may allocate: all its linear memories together against `max-memory`,
//! all its tables' elements together, and how many instances, memories and tables it may
//! create. wasmtime's own `StoreLimits` applies the memory limit to each memory on its own,
//! so a component with four memories could hold four times `max-memory`.

use wasmtime::ResourceLimiter;

use crate::metrics::GuestMetrics;

/// Core instances, linear memories and tables one guest may create, and table elements in all
/// its tables together. A component's counts are fixed when it is built, so these only refuse
/// components built to exhaust the host (each memory reserves gigabytes of address space, each
/// element a pointer). Far above what real guests use: the Rust guests have 3 core modules,
/// 1 memory and 2 tables of about 200 elements; the componentize-py echo guest (21 MB) has 14
/// core modules, 1 memory, 2 tables and 6 000 elements.
const MAX_INSTANCES: usize = 1000;
const MAX_MEMORIES: usize = 32;
const MAX_TABLES: usize = 100;
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// One guest's wasm allocations, against its limits (the store's `ResourceLimiter`).
pub(crate) struct GuestLimiter {
    guest: String,
    max_memory: usize,
    /// Bytes of all memories together: the sum of every size the limiter allowed (an allowed
    /// growth the OS then failed stays counted, erring on the safe side; memories never
    /// shrink and are freed only with the store).
    memory: usize,
    table_elements: usize,
    /// A refused growth was reported.
    warned: bool,
    /// A memory growth was refused: the run ends counted as one max-memory stopped (a guest
    /// whose allocation fails aborts, in every language sockbox runs).
    refused_memory: bool,
    /// Where the memory held and the runs ended by max-memory are counted.
    metrics: GuestMetrics,
}

impl GuestLimiter {
    pub(crate) fn new(guest: &str, max_memory: u64, metrics: GuestMetrics) -> GuestLimiter {
        GuestLimiter {
            guest: guest.to_string(),
            max_memory: usize::try_from(max_memory).unwrap_or(usize::MAX),
            memory: 0,
            table_elements: 0,
            warned: false,
            refused_memory: false,
            metrics,
        }
    }

    /// Says (once per guest: a guest may retry in a loop) why a growth was refused.
    fn refuse(&mut self, why: impl FnOnce() -> String) -> bool {
        if !std::mem::replace(&mut self.warned, true) {
            tracing::warn!(
                "guest `{}`: {}; the growth fails inside the guest",
                self.guest,
                why()
            );
        }
        false
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let Some(total) = grown(self.memory, current, desired, maximum) else {
            return Ok(false);
        };
        if total > self.max_memory {
            self.refused_memory = true;
            let max = self.max_memory;
            return Ok(self.refuse(|| {
                format!(
                    "refused to grow a memory to {desired} bytes: its memories together would \
                     hold {total} bytes, over max-memory ({max} bytes)"
                )
            }));
        }
        self.metrics
            .memory_changed(total as i64 - self.memory as i64);
        self.memory = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let Some(total) = grown(self.table_elements, current, desired, maximum) else {
            return Ok(false);
        };
        if total > MAX_TABLE_ELEMENTS {
            return Ok(self.refuse(|| {
                format!(
                    "refused to grow a table to {desired} elements: its tables together would \
                     hold {total}, over the host's limit of {MAX_TABLE_ELEMENTS}"
                )
            }));
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// What all memories (or tables) together hold once one of them grows from `current` to
/// `desired`; `None` past that one's own declared maximum, which wasmtime fails after asking:
/// refused here, so every growth the limiter allows is one that happens.
fn grown(sum: usize, current: usize, desired: usize, maximum: Option<usize>) -> Option<usize> {
    if maximum.is_some_and(|max| desired > max) {
        return None;
    }
    Some(sum.saturating_add(desired.saturating_sub(current)))
}

impl Drop for GuestLimiter {
    fn drop(&mut self) {
        self.metrics.memory_changed(-(self.memory as i64));
        if self.refused_memory {
            self.metrics.memory_killed();
        }
        tracing::debug!(
            guest = %self.guest,
            memory = self.memory,
            table_elements = self.table_elements,
            "the guest's wasm allocations at its end"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_counted_over_all_memories() {
        let mut limiter = GuestLimiter::new("g", 100, GuestMetrics::detached());
        // Two memories created with 40 bytes each, then each grown by 10.
        assert!(limiter.memory_growing(0, 40, None).unwrap());
        assert!(limiter.memory_growing(0, 40, None).unwrap());
        assert!(limiter.memory_growing(40, 50, None).unwrap());
        assert!(limiter.memory_growing(40, 50, None).unwrap());
        // A third memory would take the sum past 100, even though it alone is small.
        assert!(!limiter.memory_growing(0, 10, None).unwrap());
        assert_eq!(limiter.memory, 100);
        // Past a memory's own maximum: refused, and not counted.
        let mut limiter = GuestLimiter::new("g", 100, GuestMetrics::detached());
        assert!(!limiter.memory_growing(0, 20, Some(10)).unwrap());
        assert_eq!(limiter.memory, 0);
    }

    #[test]
    fn table_elements_are_counted_over_all_tables() {
        let mut limiter = GuestLimiter::new("g", 100, GuestMetrics::detached());
        assert!(
            limiter
                .table_growing(0, MAX_TABLE_ELEMENTS / 2, None)
                .unwrap()
        );
        assert!(
            limiter
                .table_growing(0, MAX_TABLE_ELEMENTS / 2, None)
                .unwrap()
        );
        assert!(!limiter.table_growing(0, 1, None).unwrap());
    }
}

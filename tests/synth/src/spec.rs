//! What a synthetic program is: its work functions and their roles, its locks, worker pools
//! and devices, the stages every request goes through, and its background threads. Generated
//! from a seed and a template family; saved and loaded as JSON.

use serde::{Deserialize, Serialize};

use crate::work::FUNCTIONS;

/// The template families (evaluation holds whole families out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Requests serialize on one lock whose holder does real work.
    LockBound,
    /// Requests pass through a pipeline of worker pools; one stage is the bottleneck.
    PoolBound,
    /// Requests fan out to several workers and wait for the slowest.
    FanOut,
    /// Requests wait on a device thread with a fixed service time.
    IoBound,
    /// A random mix of all the blocks.
    Mixed,
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 5] = [
        Self::LockBound,
        Self::PoolBound,
        Self::FanOut,
        Self::IoBound,
        Self::Mixed,
    ];

    /// The name used in specs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::LockBound => "lock_bound",
            Self::PoolBound => "pool_bound",
            Self::FanOut => "fan_out",
            Self::IoBound => "io_bound",
            Self::Mixed => "mixed",
        }
    }
}

impl std::str::FromStr for Family {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown family {s:?}: expected one of {}",
                    Self::ALL.map(Family::name).join(", ")
                )
            })
    }
}

/// One work function in its role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Function {
    /// Index into [`FUNCTIONS`]; its symbol is `critpath_synth::work::<name>`.
    pub index: usize,
    /// The symbol's last component (`w17`).
    pub name: String,
    /// What it does in this program (`frontend_parse`, `lock_holder`, `housekeeping`, ...).
    pub role: String,
    /// Work per call, in units (about a microsecond each).
    pub units: u64,
}

/// A stage of every request. Function fields index [`Spec::functions`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Stage {
    /// CPU work on the request's thread.
    Cpu { function: usize },
    /// CPU work while holding a lock every request needs.
    Locked { lock: usize, function: usize },
    /// Hand the work to a worker pool and wait for it.
    Handoff { pool: usize, function: usize },
    /// Hand several pieces to a pool at once and wait for all of them.
    FanOut { pool: usize, functions: Vec<usize> },
    /// Ask a device and block reading its answer from a pipe.
    Io { device: usize },
    /// Sleep.
    Sleep { micros: u64 },
}

/// A worker pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    /// Worker threads.
    pub workers: usize,
}

/// A device: a thread that answers each request after a fixed service time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Its function (a little CPU per request); scaling it scales the service time too.
    pub function: usize,
    /// Service time per request.
    pub service_micros: u64,
}

/// A background thread off every request's path (a red herring when it burns much CPU).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Background {
    /// Its function.
    pub function: usize,
    /// Share of its time spent working (the rest asleep), 0 to 1.
    pub duty: f64,
}

/// A synthetic program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// The seed it was generated from.
    pub seed: u64,
    /// Its template family.
    pub family: Family,
    /// Work functions, each in one role.
    pub functions: Vec<Function>,
    /// Threads serving requests.
    pub frontends: usize,
    /// Locks.
    pub locks: usize,
    /// Worker pools.
    pub pools: Vec<Pool>,
    /// Devices.
    pub devices: Vec<Device>,
    /// The stages of every request, in order.
    pub path: Vec<Stage>,
    /// Background threads.
    pub background: Vec<Background>,
}

/// A small deterministic generator (splitmix64).
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Builds a spec, handing out distinct work functions in a seeded order.
struct Builder {
    rng: Rng,
    order: Vec<usize>,
    spec: Spec,
}

impl Builder {
    fn function(&mut self, role: &str, units: u64) -> usize {
        let index = self.order[self.spec.functions.len() % self.order.len()];
        self.spec.functions.push(Function {
            index,
            name: FUNCTIONS[index].0.to_owned(),
            role: role.to_owned(),
            units,
        });
        self.spec.functions.len() - 1
    }

    fn pool(&mut self, workers: usize) -> usize {
        self.spec.pools.push(Pool { workers });
        self.spec.pools.len() - 1
    }

    fn red_herring(&mut self) {
        let units = self.rng.range(2_000, 8_000);
        let function = self.function("housekeeping", units);
        let duty = 0.6 + 0.3 * self.rng.unit();
        // Two threads: housekeeping that burns more CPU than most of the request path.
        for _ in 0..2 {
            self.spec.background.push(Background { function, duty });
        }
    }
}

impl Spec {
    /// Generates a program of a family from a seed (the same seed, the same program).
    pub fn generate(family: Family, seed: u64) -> Spec {
        let mut rng = Rng::new(seed ^ (family as u64).wrapping_mul(0x1000_0000_01b3));
        let mut order: Vec<usize> = (0..FUNCTIONS.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.range(0, i as u64) as usize);
        }
        let mut b = Builder {
            rng,
            order,
            spec: Spec {
                seed,
                family,
                functions: Vec::new(),
                frontends: 4,
                locks: 0,
                pools: Vec::new(),
                devices: Vec::new(),
                path: Vec::new(),
                background: Vec::new(),
            },
        };
        let r = |b: &mut Builder, lo, hi| b.rng.range(lo, hi);
        match family {
            Family::LockBound => {
                let parse = r(&mut b, 50, 200);
                let parse = b.function("frontend_parse", parse);
                b.spec.locks = 1;
                let held = r(&mut b, 300, 800);
                let held = b.function("lock_holder", held);
                let reply = r(&mut b, 50, 200);
                let reply = b.function("frontend_reply", reply);
                b.spec.path = vec![
                    Stage::Cpu { function: parse },
                    Stage::Locked {
                        lock: 0,
                        function: held,
                    },
                    Stage::Cpu { function: reply },
                ];
                b.red_herring();
            }
            Family::PoolBound => {
                let accept = r(&mut b, 20, 100);
                let accept = b.function("frontend_accept", accept);
                let narrow = b.pool(1);
                let bottleneck = r(&mut b, 300, 700);
                let bottleneck = b.function("bottleneck_stage", bottleneck);
                let wide_workers = r(&mut b, 3, 4) as usize;
                let wide = b.pool(wide_workers);
                let spare = r(&mut b, 100, 250);
                let spare = b.function("spare_stage", spare);
                b.spec.path = vec![
                    Stage::Cpu { function: accept },
                    Stage::Handoff {
                        pool: narrow,
                        function: bottleneck,
                    },
                    Stage::Handoff {
                        pool: wide,
                        function: spare,
                    },
                ];
                b.red_herring();
            }
            Family::FanOut => {
                let split = r(&mut b, 20, 100);
                let split = b.function("frontend_split", split);
                let pool = b.pool(4);
                let n = r(&mut b, 2, 4) as usize;
                let mut pieces = Vec::new();
                for i in 0..n {
                    let units = if i == 0 {
                        r(&mut b, 400, 800) // the slowest shard
                    } else {
                        r(&mut b, 50, 250)
                    };
                    pieces.push(b.function(&format!("shard_{i}"), units));
                }
                let merge = r(&mut b, 30, 150);
                let merge = b.function("frontend_merge", merge);
                b.spec.path = vec![
                    Stage::Cpu { function: split },
                    Stage::FanOut {
                        pool,
                        functions: pieces,
                    },
                    Stage::Cpu { function: merge },
                ];
                b.red_herring();
            }
            Family::IoBound => {
                let prepare = r(&mut b, 30, 150);
                let prepare = b.function("frontend_prepare", prepare);
                let device = b.function("device_service", 5);
                let service_micros = r(&mut b, 300, 1_500);
                b.spec.devices.push(Device {
                    function: device,
                    service_micros,
                });
                let decode = r(&mut b, 30, 150);
                let decode = b.function("frontend_decode", decode);
                b.spec.path = vec![
                    Stage::Cpu { function: prepare },
                    Stage::Io { device: 0 },
                    Stage::Cpu { function: decode },
                ];
                b.red_herring();
            }
            Family::Mixed => {
                let stages = r(&mut b, 3, 5);
                for i in 0..stages {
                    let stage = match r(&mut b, 0, 4) {
                        0 => {
                            let units = r(&mut b, 50, 300);
                            Stage::Cpu {
                                function: b.function(&format!("step{i}_cpu"), units),
                            }
                        }
                        1 => {
                            b.spec.locks += 1;
                            let units = r(&mut b, 100, 400);
                            Stage::Locked {
                                lock: b.spec.locks - 1,
                                function: b.function(&format!("step{i}_locked"), units),
                            }
                        }
                        2 => {
                            let workers = r(&mut b, 1, 3) as usize;
                            let pool = b.pool(workers);
                            let units = r(&mut b, 100, 400);
                            Stage::Handoff {
                                pool,
                                function: b.function(&format!("step{i}_pool"), units),
                            }
                        }
                        3 => {
                            let function = b.function(&format!("step{i}_device"), 5);
                            let service_micros = r(&mut b, 200, 800);
                            b.spec.devices.push(Device {
                                function,
                                service_micros,
                            });
                            Stage::Io {
                                device: b.spec.devices.len() - 1,
                            }
                        }
                        _ => Stage::Sleep {
                            micros: r(&mut b, 100, 500),
                        },
                    };
                    b.spec.path.push(stage);
                }
                b.red_herring();
            }
        }
        b.spec
    }

    /// The function playing `role`, if any.
    pub fn role(&self, role: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.role == role)
    }
}

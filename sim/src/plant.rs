//! A small bottling plant with plausible physics, reachable only over Modbus.
//!
//! - **Filling line** (Modbus TCP, unit 1): a state machine (running, micro-stop, stopped), speed
//!   following its setpoint with a first-order lag, good and reject counters.
//! - **Utilities gateway** (RTU over TCP): unit 1 a heated tank (level with fill/drain hysteresis;
//!   temperature following a first-order heat balance of its heated section, 300 kg of water, a
//!   heater of up to 80 kW whose power is a writable register, and losses of 900 W/K to ambient;
//!   thermal time runs [`TANK_TIME_SCALE`] times faster than the wall clock; holding register 1
//!   holds the temperature setpoint an operator gives the PID plugin), unit 11 a pump (flow, discharge pressure, vibration RMS
//!   with a slowly developing bearing fault that can be switched on), unit 21 an energy meter
//!   (total kW of the plant and its kWh integral), unit 31 a pharmacy fridge for vaccines (2–8 °C:
//!   a compressor cycling between 4 and 6 °C, a door opened now and then that lets heat in, now
//!   and then long enough to leave the band; input register 0 the temperature in 0.01 °C,
//!   discrete input 0 the door contact).
//! - **Quality lab** (OPC UA, security None): fill weight of sampled bottles (g), sugar content
//!   (°Brix) and the number of samples taken.
//!
//! The register maps match `config/demo.toml` (and `config/example.toml`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinHandle;

use crate::modbus::{Framing, ModbusServer, SimDevice};
use crate::opcua::OpcUaSimServer;

/// Simulation step.
pub const STEP: Duration = Duration::from_millis(100);

/// Ambient temperature, °C.
const AMBIENT_C: f64 = 18.0;

/// How much faster than the wall clock the tank's thermal time runs (so the demo's temperature
/// loop moves visibly and a test sees 600 simulated seconds in 30 wall seconds).
pub const TANK_TIME_SCALE: f64 = 20.0;

/// Water in the tank's heated section, kg.
const HEATED_MASS_KG: f64 = 300.0;

/// Heat lost to ambient, W per K above it.
const LOSS_W_PER_K: f64 = 900.0;

/// The pharmacy fridge's thermostat: the compressor starts above this, °C...
const FRIDGE_CUT_IN_C: f64 = 6.0;
/// ...and stops below this, °C.
const FRIDGE_CUT_OUT_C: f64 = 4.0;
/// Cooling while the compressor runs, °C/s.
const FRIDGE_COOLING_C_PER_S: f64 = 0.03;
/// Warming with the door closed (insulation losses), °C/s.
const FRIDGE_LEAK_C_PER_S: f64 = 0.004;
/// Warming with the door open, °C/s (a 40 s opening: +3.2 °C).
const FRIDGE_DOOR_C_PER_S: f64 = 0.08;

/// The running plant: its servers and the physics task.
#[derive(Debug)]
pub struct Plant {
    /// The filling line PLC (Modbus TCP).
    pub line_plc: ModbusServer,
    /// The utilities gateway (RTU over TCP: tank unit 1, pump unit 11, meter unit 21).
    pub utilities: ModbusServer,
    /// The quality lab (OPC UA): `Lab.FillWeight`, `Lab.Brix`, `Lab.SampleCount`.
    pub lab: Arc<OpcUaSimServer>,
    /// The devices, for tests and fault injection.
    pub devices: PlantDevices,
    /// The tank's thermal time, ms (advances [`TANK_TIME_SCALE`] × the physics' steps).
    thermal_ms: Arc<AtomicU64>,
    physics: JoinHandle<()>,
}

/// The simulated devices.
#[derive(Debug, Clone)]
pub struct PlantDevices {
    /// Filling line PLC.
    pub filler: Arc<SimDevice>,
    /// Heated tank.
    pub tank: Arc<SimDevice>,
    /// Pump.
    pub pump: Arc<SimDevice>,
    /// Energy meter.
    pub meter: Arc<SimDevice>,
    /// Pharmacy fridge.
    pub fridge: Arc<SimDevice>,
}

impl Plant {
    /// Starts the plant's servers on free loopback ports and its physics.
    pub async fn start() -> std::io::Result<Self> {
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let devices = PlantDevices {
            filler: SimDevice::new(),
            tank: SimDevice::new(),
            pump: SimDevice::new(),
            meter: SimDevice::new(),
            fridge: SimDevice::new(),
        };
        devices.filler.set_holding(10, &[3000]); // speed setpoint 300.0 /min
        devices.tank.set_holding(0, &[1800]); // heater 18.00 kW: about what holds 38 °C
        devices.tank.set_holding(1, &[400]); // temperature setpoint 40.0 °C
        devices.pump.set_holding(0, &[1]); // running
        devices
            .meter
            .set_holding(100, &words_of_text("EM-24-0042", 8));
        let line_plc = ModbusServer::bind(
            loopback,
            Framing::Tcp,
            HashMap::from([(1, Arc::clone(&devices.filler))]),
        )
        .await?;
        let utilities = ModbusServer::bind(
            loopback,
            Framing::RtuOverTcp,
            HashMap::from([
                (1, Arc::clone(&devices.tank)),
                (11, Arc::clone(&devices.pump)),
                (21, Arc::clone(&devices.meter)),
                (31, Arc::clone(&devices.fridge)),
            ]),
        )
        .await?;
        let lab = Arc::new(
            OpcUaSimServer::start(loopback, &["FillWeight", "Brix", "SampleCount"]).await?,
        );
        let thermal_ms = Arc::new(AtomicU64::new(0));
        let physics = tokio::spawn(run_physics(
            devices.clone(),
            Arc::clone(&lab),
            Arc::clone(&thermal_ms),
        ));
        Ok(Self {
            line_plc,
            utilities,
            lab,
            devices,
            thermal_ms,
            physics,
        })
    }

    /// Seconds of the tank's thermal time since the plant started (the physics' own count of
    /// its steps: a loaded machine slows it rather than skipping).
    pub fn tank_seconds(&self) -> f64 {
        self.thermal_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Stops the physics and every server.
    pub async fn stop(self) {
        self.physics.abort();
        let _ = self.physics.await;
        self.line_plc.stop().await;
        self.utilities.stop().await;
        if let Ok(lab) = Arc::try_unwrap(self.lab) {
            lab.stop().await;
        }
    }
}

fn words_of_text(text: &str, registers: usize) -> Vec<u16> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.resize(registers * 2, 0);
    bytes
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect()
}

fn f32_cdab(value: f32) -> [u16; 2] {
    let bits = value.to_bits();
    [(bits & 0xFFFF) as u16, (bits >> 16) as u16]
}

fn u32_cdab(value: u32) -> [u16; 2] {
    [(value & 0xFFFF) as u16, (value >> 16) as u16]
}

fn f64_dcba(value: f64) -> [u16; 4] {
    let b = value.to_le_bytes();
    [
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]),
    ]
}

/// Filling line state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    Stopped = 0,
    Running = 1,
    MicroStop = 2,
}

#[derive(Debug)]
struct Physics {
    line_state: LineState,
    state_left_s: f64,
    speed: f64,
    good: f64,
    rejects: f64,
    level: f64,
    filling: bool,
    temperature: f64,
    flow: f64,
    vibration: f64,
    fault_age_s: f64,
    energy_kwh: f64,
    fridge_temperature: f64,
    compressor_on: bool,
    door_open: bool,
    /// Seconds until the door opens or closes next.
    door_left_s: f64,
}

async fn run_physics(devices: PlantDevices, lab: Arc<OpcUaSimServer>, thermal_ms: Arc<AtomicU64>) {
    let mut p = Physics {
        line_state: LineState::Running,
        state_left_s: 45.0,
        speed: 0.0,
        good: 0.0,
        rejects: 0.0,
        level: 55.0,
        filling: false,
        temperature: 38.0,
        flow: 0.0,
        vibration: 1.8,
        fault_age_s: 0.0,
        energy_kwh: 12_345.6,
        fridge_temperature: 5.0,
        compressor_on: false,
        door_open: false,
        door_left_s: 30.0,
    };
    let mut tick = tokio::time::interval(STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = 0u32;
    loop {
        tick.tick().await;
        step(&mut p, &devices, STEP.as_secs_f64(), &mut rand::rng());
        thermal_ms.fetch_add(
            (STEP.as_secs_f64() * TANK_TIME_SCALE * 1000.0) as u64,
            Ordering::Relaxed,
        );
        // The lab weighs a bottle about once a second while the line runs.
        if p.line_state == LineState::Running && rand::rng().random_bool(0.1) {
            samples += 1;
            let mut rng = rand::rng();
            lab.set("FillWeight", 500.0 + rng.random_range(-3.0..3.0));
            lab.set("Brix", 11.2 + rng.random_range(-0.15..0.15));
            lab.set("SampleCount", f64::from(samples));
        }
    }
}

fn step(p: &mut Physics, d: &PlantDevices, dt: f64, rng: &mut impl Rng) {
    // Filling line: running for a while, then a short micro-stop.
    p.state_left_s -= dt;
    if p.state_left_s <= 0.0 {
        (p.line_state, p.state_left_s) = match p.line_state {
            LineState::Running => (LineState::MicroStop, rng.random_range(2.0..8.0)),
            LineState::MicroStop | LineState::Stopped => {
                (LineState::Running, rng.random_range(30.0..90.0))
            }
        };
    }
    let setpoint = f64::from(d.filler.holding(10, 1)[0]) / 10.0;
    if setpoint < 1.0 {
        p.line_state = LineState::Stopped;
    } else if p.line_state == LineState::Stopped {
        p.line_state = LineState::Running;
    }
    let target = if p.line_state == LineState::Running {
        setpoint
    } else {
        0.0
    };
    p.speed += (target - p.speed) * (dt / 3.0).min(1.0); // 3 s time constant
    let bottles = p.speed / 60.0 * dt;
    let reject_share = 0.015;
    p.good += bottles * (1.0 - reject_share);
    p.rejects += bottles * reject_share;
    d.filler
        .set_holding(0, &[p.line_state as u16, (p.speed * 10.0).round() as u16]);
    d.filler.set_holding(2, &u32_cdab(p.good as u32));
    d.filler.set_holding(4, &u32_cdab(p.rejects as u32));

    // Heated tank: 10 m³ at 100 %; fill valve opens below 40 %, closes above 80 %.
    if p.level < 40.0 {
        p.filling = true;
    } else if p.level > 80.0 {
        p.filling = false;
    }
    let inflow_pct_s = if p.filling { 0.25 } else { 0.0 };
    let outflow_pct_s = 0.08; // drawn by the line
    p.level = (p.level + (inflow_pct_s - outflow_pct_s) * dt).clamp(0.0, 100.0);
    let heater_kw = (f64::from(d.tank.holding(0, 1)[0]) / 100.0).min(80.0);
    let heat_capacity = 4186.0 * HEATED_MASS_KG; // J/K
    let d_temp = (heater_kw * 1000.0 - LOSS_W_PER_K * (p.temperature - AMBIENT_C)) / heat_capacity
        * dt
        * TANK_TIME_SCALE;
    p.temperature += d_temp;
    d.tank.set_input(
        0,
        &[
            (p.level * 100.0).round() as u16,
            (p.temperature * 10.0).round() as i16 as u16,
        ],
    );

    // Pump: flow and pressure with a little noise; bearing fault grows vibration exponentially.
    let running = d.pump.holding(0, 1)[0] & 1 == 1;
    let fault = d.pump.holding(1, 1)[0] == 1;
    let flow_target = if running { 42.0 } else { 0.0 };
    p.flow += (flow_target - p.flow) * (dt / 2.0).min(1.0);
    let flow = p.flow
        + if running {
            rng.random_range(-0.3..0.3)
        } else {
            0.0
        };
    let pressure = if running {
        4.2 + flow / 42.0 * 1.1 + rng.random_range(-0.05..0.05)
    } else {
        0.0
    };
    if fault {
        p.fault_age_s += dt;
    } else {
        p.fault_age_s = 0.0; // repaired
    }
    let base = if running { 1.8 } else { 0.1 };
    p.vibration = base * (p.fault_age_s / 120.0).exp() + rng.random_range(-0.05..0.05);
    d.pump.set_input(10, &f32_cdab(flow as f32));
    d.pump.set_input(12, &f32_cdab(pressure as f32));
    d.pump.set_input(14, &f32_cdab(p.vibration.max(0.0) as f32));

    // Energy meter: line drive + heater + pump + base load.
    let power_kw = 3.0 + p.speed / 600.0 * 11.0 + heater_kw + if running { 7.5 } else { 0.0 };
    p.energy_kwh += power_kw * dt / 3600.0;
    d.meter.set_input(0, &f32_cdab(power_kw as f32));
    d.meter.set_input(2, &f64_dcba(p.energy_kwh));

    fridge(p, d, dt, rng);
}

/// The pharmacy fridge: the door closed for 45–120 s, then open for 5–40 s (one opening in ten
/// lasts 60–150 s: someone stocking it, long enough to leave the 2–8 °C band); the compressor
/// cycles between [`FRIDGE_CUT_OUT_C`] and [`FRIDGE_CUT_IN_C`].
fn fridge(p: &mut Physics, d: &PlantDevices, dt: f64, rng: &mut impl Rng) {
    p.door_left_s -= dt;
    if p.door_left_s <= 0.0 {
        p.door_open = !p.door_open;
        p.door_left_s = match (p.door_open, rng.random_bool(0.1)) {
            (false, _) => rng.random_range(45.0..120.0),
            (true, false) => rng.random_range(5.0..40.0),
            (true, true) => rng.random_range(60.0..150.0),
        };
    }
    if p.fridge_temperature > FRIDGE_CUT_IN_C {
        p.compressor_on = true;
    } else if p.fridge_temperature < FRIDGE_CUT_OUT_C {
        p.compressor_on = false;
    }
    let warming = if p.door_open {
        FRIDGE_DOOR_C_PER_S
    } else {
        FRIDGE_LEAK_C_PER_S
    };
    let cooling = if p.compressor_on {
        FRIDGE_COOLING_C_PER_S
    } else {
        0.0
    };
    p.fridge_temperature += (warming - cooling) * dt;
    d.fridge
        .set_input(0, &[(p.fridge_temperature * 100.0).round() as i16 as u16]);
    d.fridge.set_discrete(0, p.door_open);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices() -> PlantDevices {
        let d = PlantDevices {
            filler: SimDevice::new(),
            tank: SimDevice::new(),
            pump: SimDevice::new(),
            meter: SimDevice::new(),
            fridge: SimDevice::new(),
        };
        d.filler.set_holding(10, &[3000]);
        d.pump.set_holding(0, &[1]);
        d
    }

    fn physics() -> Physics {
        Physics {
            line_state: LineState::Running,
            state_left_s: 1e9,
            speed: 0.0,
            good: 0.0,
            rejects: 0.0,
            level: 50.0,
            filling: false,
            temperature: AMBIENT_C,
            flow: 0.0,
            vibration: 1.8,
            fault_age_s: 0.0,
            energy_kwh: 0.0,
            fridge_temperature: 5.0,
            compressor_on: false,
            door_open: false,
            door_left_s: 30.0,
        }
    }

    #[test]
    fn tank_temperature_settles_where_heating_equals_losses() {
        let d = devices();
        d.tank.set_holding(0, &[900]); // 9 kW → equilibrium 18 + 9000 / 900 = 28 °C
        let mut p = physics();
        let mut rng = rand::rng();
        for _ in 0..200_000 {
            step(&mut p, &d, 0.1, &mut rng);
        }
        assert!((p.temperature - 28.0).abs() < 0.2, "{}", p.temperature);
    }

    #[test]
    fn line_speed_follows_its_setpoint_and_counts_bottles() {
        let d = devices();
        let mut p = physics();
        let mut rng = rand::rng();
        for _ in 0..600 {
            step(&mut p, &d, 0.1, &mut rng); // 60 s
        }
        assert!((p.speed - 300.0).abs() < 1.0, "{}", p.speed);
        // About 300 bottles/min for a minute, less the 3 s ramp.
        let total = p.good + p.rejects;
        assert!((270.0..300.0).contains(&total), "{total}");
        assert!((p.rejects / total - 0.015).abs() < 1e-9);
    }

    #[test]
    fn a_bearing_fault_makes_vibration_grow() {
        let d = devices();
        let mut p = physics();
        let mut rng = rand::rng();
        for _ in 0..100 {
            step(&mut p, &d, 0.1, &mut rng);
        }
        let healthy = p.vibration;
        d.pump.set_holding(1, &[1]);
        for _ in 0..1200 {
            step(&mut p, &d, 0.1, &mut rng); // 120 s of fault: e¹ × base
        }
        assert!(p.vibration > healthy * 2.3, "{healthy} → {}", p.vibration);
    }

    #[test]
    fn the_fridge_cycles_in_its_band_with_the_door_shut_and_warms_with_it_open() {
        let d = devices();
        let mut p = physics();
        p.door_left_s = f64::INFINITY;
        let mut rng = rand::rng();
        let (mut lowest, mut highest) = (f64::MAX, f64::MIN);
        for _ in 0..36_000 {
            step(&mut p, &d, 0.1, &mut rng); // an hour, door shut
            lowest = lowest.min(p.fridge_temperature);
            highest = highest.max(p.fridge_temperature);
        }
        assert!(lowest > 3.9 && highest < 6.1, "{lowest} … {highest}");
        p.door_open = true;
        p.compressor_on = false;
        p.fridge_temperature = 5.0;
        for _ in 0..400 {
            step(&mut p, &d, 0.1, &mut rng); // 40 s open
        }
        // 0.08 °C/s until the compressor cuts in above 6 °C (12.5 s), then 0.05 °C/s: 7.4 °C.
        assert!(p.fridge_temperature > 7.0, "{}", p.fridge_temperature);
        assert!(d.fridge.with_tables(|t| t.discrete[0]));
    }
}

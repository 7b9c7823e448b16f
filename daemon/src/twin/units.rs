//! Engineering units: UNECE Recommendation 20 common codes, as OPC UA carries them.
//!
//! OPC UA Part 8 §5.6.3 (EUInformation) names units by their UNECE common code and derives the
//! numeric `UnitId` from that code's characters. The config accepts either the code (`CEL`) or the
//! usual symbol (`°C`); both resolve to one [`EngineeringUnit`].

/// One engineering unit: UNECE common code, display symbol and English name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineeringUnit {
    /// UNECE Recommendation 20 common code, e.g. `CEL`.
    pub code: &'static str,
    /// Display symbol, e.g. `°C` (OPC UA `EUInformation.DisplayName`).
    pub symbol: &'static str,
    /// English name, e.g. `degree Celsius` (OPC UA `EUInformation.Description`).
    pub name: &'static str,
}

impl EngineeringUnit {
    /// The OPC UA `UnitId`: the code's ASCII characters packed big-endian into an `i32`
    /// (OPC UA Part 8 §5.6.3, "UNECE Codes for Units of Measure").
    pub fn unit_id(&self) -> i32 {
        self.code
            .bytes()
            .fold(0i32, |id, byte| (id << 8) | i32::from(byte))
    }

    /// The namespace URI OPC UA uses for UNECE unit ids (OPC UA Part 8 §5.6.3).
    pub const NAMESPACE_URI: &'static str = "http://www.opcfoundation.org/UA/units/un/cefact";
}

macro_rules! units {
    ($(($code:literal, $symbol:literal, $name:literal)),* $(,)?) => {
        /// Every unit the config accepts, by UNECE code.
        pub const UNITS: &[EngineeringUnit] = &[
            $(EngineeringUnit { code: $code, symbol: $symbol, name: $name },)*
        ];
    };
}

units![
    ("CEL", "°C", "degree Celsius"),
    ("FAH", "°F", "degree Fahrenheit"),
    ("KEL", "K", "kelvin"),
    ("BAR", "bar", "bar"),
    ("MBR", "mbar", "millibar"),
    ("PAL", "Pa", "pascal"),
    ("KPA", "kPa", "kilopascal"),
    ("MPA", "MPa", "megapascal"),
    ("PS", "psi", "pound-force per square inch"),
    ("MTR", "m", "metre"),
    ("CMT", "cm", "centimetre"),
    ("MMT", "mm", "millimetre"),
    ("4H", "µm", "micrometre"),
    ("MTQ", "m³", "cubic metre"),
    ("LTR", "l", "litre"),
    ("MQH", "m³/h", "cubic metre per hour"),
    ("L2", "l/min", "litre per minute"),
    ("KGM", "kg", "kilogram"),
    ("GRM", "g", "gram"),
    ("TNE", "t", "tonne"),
    ("KGH", "kg/h", "kilogram per hour"),
    ("SEC", "s", "second"),
    ("MIN", "min", "minute"),
    ("HUR", "h", "hour"),
    ("C26", "ms", "millisecond"),
    ("HTZ", "Hz", "hertz"),
    ("RPM", "r/min", "revolutions per minute"),
    ("MTS", "m/s", "metre per second"),
    ("2X", "m/min", "metre per minute"),
    ("MMS", "mm/s", "millimetre per second"),
    ("MSK", "m/s²", "metre per second squared"),
    ("WTT", "W", "watt"),
    ("KWT", "kW", "kilowatt"),
    ("MAW", "MW", "megawatt"),
    ("KWH", "kWh", "kilowatt hour"),
    ("MWH", "MWh", "megawatt hour"),
    ("WHR", "Wh", "watt hour"),
    ("VLT", "V", "volt"),
    ("AMP", "A", "ampere"),
    ("KVA", "kVA", "kilovolt ampere"),
    ("NEW", "N", "newton"),
    ("NU", "N·m", "newton metre"),
    ("P1", "%", "percent"),
    ("C62", "1", "one (dimensionless count)"),
    ("H87", "pcs", "piece"),
    ("C94", "1/min", "reciprocal minute"),
    ("D55", "W/(m²·K)", "watt per square metre kelvin"),
    ("C24", "mPa·s", "millipascal second"),
    ("59", "ppm", "part per million"),
];

/// The unit whose UNECE code or symbol is `text`, if Twinloom knows it.
pub fn lookup(text: &str) -> Option<&'static EngineeringUnit> {
    UNITS
        .iter()
        .find(|unit| unit.code == text || unit.symbol == text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_ids_follow_opc_ua_part_8() {
        // Values given in OPC UA Part 8 Annex and the UNECE mapping table.
        assert_eq!(lookup("CEL").unwrap().unit_id(), 4_408_652);
        assert_eq!(lookup("°C").unwrap().code, "CEL");
        assert_eq!(lookup("P1").unwrap().unit_id(), 20_529);
        assert!(lookup("furlongs").is_none());
    }

    #[test]
    fn codes_and_symbols_are_unique() {
        for (i, a) in UNITS.iter().enumerate() {
            for b in &UNITS[i + 1..] {
                assert_ne!(a.code, b.code);
                assert_ne!(a.symbol, b.symbol);
            }
        }
    }
}

//! Register codec: Modbus registers ⇄ typed raw values, in every word/byte order.
//!
//! A Modbus register is a 16-bit word sent high byte first (Modbus Application Protocol v1.1b3,
//! §4.2). The protocol says nothing about values wider than one register, so devices differ.
//! Writing a 32-bit value's bytes as `A B C D` (A most significant), the four orders are:
//!
//! | order  | registers        | seen on                               |
//! |--------|------------------|---------------------------------------|
//! | `ABCD` | `AB`, `CD`       | big-endian; Schneider, Siemens        |
//! | `CDAB` | `CD`, `AB`       | word-swapped; many meters and drives  |
//! | `BADC` | `BA`, `DC`       | byte-swapped within each word         |
//! | `DCBA` | `DC`, `BA`       | little-endian                         |
//!
//! For 64-bit values the same two operations apply to four words (`CDAB` reverses the word
//! order, `BADC` swaps the bytes of each word). Strings put two characters in each register,
//! first character in the high byte (`ABCD`) or in the low byte (`BADC`).

use thiserror::Error;

pub use crate::config::sources::modbus::{Encoding, WordOrder};
use crate::twin::Value;

/// Why registers could not become a value, or a value could not become registers.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// Fewer registers than the encoding needs.
    #[error("expected {expected} registers, got {got}")]
    Length {
        /// Registers the encoding needs.
        expected: usize,
        /// Registers available.
        got: usize,
    },
    /// String registers that are not UTF-8.
    #[error("string registers are not valid utf-8")]
    Utf8,
    /// A value that the encoding cannot represent (too large, wrong kind, too long).
    #[error("value {value} does not fit encoding `{encoding}`")]
    Unrepresentable {
        /// The value, printed.
        value: String,
        /// The encoding's name.
        encoding: &'static str,
    },
}

/// A decoding recipe for one binding: encoding, order, bit number and string length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The encoding.
    pub encoding: Encoding,
    /// The word order.
    pub order: WordOrder,
    /// Bit number for [`Encoding::Bit`].
    pub bit: u8,
    /// Registers for [`Encoding::String`].
    pub length: u16,
}

impl Layout {
    /// A layout with `ABCD` order, bit 0 and no string length.
    pub fn new(encoding: Encoding) -> Self {
        Self {
            encoding,
            order: WordOrder::Abcd,
            bit: 0,
            length: 0,
        }
    }

    /// Registers this layout occupies.
    pub fn registers(&self) -> usize {
        usize::from(self.encoding.registers(self.length))
    }

    /// Decodes registers (exactly [`Self::registers`] of them, from the binding's address) into a raw value.
    ///
    /// Errors: [`CodecError::Length`] when too few registers are given, [`CodecError::Utf8`] for bad text.
    pub fn decode(&self, registers: &[u16]) -> Result<Value, CodecError> {
        let needed = self.registers();
        if registers.len() < needed {
            return Err(CodecError::Length {
                expected: needed,
                got: registers.len(),
            });
        }
        let words = &registers[..needed];
        Ok(match self.encoding {
            Encoding::Bool => Value::Bool(words[0] != 0),
            Encoding::Bit => Value::Bool(words[0] >> self.bit & 1 == 1),
            Encoding::I16 => Value::Int(i64::from(words[0] as i16)),
            Encoding::U16 => Value::UInt(u64::from(words[0])),
            Encoding::I32 => Value::Int(i64::from(i32::from_be_bytes(self.bytes(words)))),
            Encoding::U32 => Value::UInt(u64::from(u32::from_be_bytes(self.bytes(words)))),
            Encoding::F32 => Value::Float(f64::from(f32::from_be_bytes(self.bytes(words)))),
            Encoding::I64 => Value::Int(i64::from_be_bytes(self.bytes(words))),
            Encoding::U64 => Value::UInt(u64::from_be_bytes(self.bytes(words))),
            Encoding::F64 => Value::Float(f64::from_be_bytes(self.bytes(words))),
            Encoding::String => {
                let mut bytes = Vec::with_capacity(needed * 2);
                for word in words {
                    let [hi, lo] = word.to_be_bytes();
                    if self.order.swaps_bytes() {
                        bytes.extend([lo, hi]);
                    } else {
                        bytes.extend([hi, lo]);
                    }
                }
                let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
                bytes.truncate(end);
                let text = String::from_utf8(bytes).map_err(|_| CodecError::Utf8)?;
                Value::String(text.trim_end().into())
            }
        })
    }

    /// Encodes a raw value into registers (for writes). For [`Encoding::Bit`] this gives the one
    /// register with only that bit set or clear; callers merge it with the current register.
    ///
    /// Errors: [`CodecError::Unrepresentable`] when the value's kind or size does not fit.
    pub fn encode(&self, value: &Value) -> Result<Vec<u16>, CodecError> {
        let unrepresentable = || CodecError::Unrepresentable {
            value: value.to_string(),
            encoding: self.encoding.as_str(),
        };
        let words = match self.encoding {
            Encoding::Bool => vec![u16::from(value.as_bool().ok_or_else(unrepresentable)?)],
            Encoding::Bit => {
                let on = value.as_bool().ok_or_else(unrepresentable)?;
                vec![u16::from(on) << self.bit]
            }
            Encoding::I16 => {
                let v = i16::try_from(integral(value).ok_or_else(unrepresentable)?)
                    .map_err(|_| unrepresentable())?;
                vec![v as u16]
            }
            Encoding::U16 => {
                let v = u16::try_from(integral(value).ok_or_else(unrepresentable)?)
                    .map_err(|_| unrepresentable())?;
                vec![v]
            }
            Encoding::I32 => {
                let v = i32::try_from(integral(value).ok_or_else(unrepresentable)?)
                    .map_err(|_| unrepresentable())?;
                self.words(&v.to_be_bytes())
            }
            Encoding::U32 => {
                let v = u32::try_from(integral(value).ok_or_else(unrepresentable)?)
                    .map_err(|_| unrepresentable())?;
                self.words(&v.to_be_bytes())
            }
            Encoding::I64 => {
                let v = i64::try_from(integral(value).ok_or_else(unrepresentable)?)
                    .map_err(|_| unrepresentable())?;
                self.words(&v.to_be_bytes())
            }
            Encoding::U64 => {
                let v = u64::try_from(integral(value).ok_or_else(unrepresentable)?)
                    .map_err(|_| unrepresentable())?;
                self.words(&v.to_be_bytes())
            }
            Encoding::F32 => {
                let v = value.as_f64().ok_or_else(unrepresentable)?;
                if v.is_finite() && v.abs() > f64::from(f32::MAX) {
                    return Err(unrepresentable());
                }
                self.words(&(v as f32).to_be_bytes())
            }
            Encoding::F64 => self.words(&value.as_f64().ok_or_else(unrepresentable)?.to_be_bytes()),
            Encoding::String => {
                let Value::String(text) = value else {
                    return Err(unrepresentable());
                };
                let capacity = self.registers() * 2;
                if text.len() > capacity {
                    return Err(unrepresentable());
                }
                let mut bytes = text.as_bytes().to_vec();
                bytes.resize(capacity, 0);
                bytes
                    .chunks_exact(2)
                    .map(|pair| {
                        if self.order.swaps_bytes() {
                            u16::from_be_bytes([pair[1], pair[0]])
                        } else {
                            u16::from_be_bytes([pair[0], pair[1]])
                        }
                    })
                    .collect()
            }
        };
        Ok(words)
    }

    /// The value's big-endian bytes from registers in this layout's order.
    fn bytes<const N: usize>(&self, words: &[u16]) -> [u8; N] {
        let mut out = [0u8; N];
        let count = N / 2;
        for (i, chunk) in out.chunks_exact_mut(2).enumerate() {
            let word = if self.order.swaps_words() {
                words[count - 1 - i]
            } else {
                words[i]
            };
            let [hi, lo] = word.to_be_bytes();
            if self.order.swaps_bytes() {
                chunk.copy_from_slice(&[lo, hi]);
            } else {
                chunk.copy_from_slice(&[hi, lo]);
            }
        }
        out
    }

    /// Registers in this layout's order from a value's big-endian bytes.
    fn words(&self, bytes: &[u8]) -> Vec<u16> {
        let mut words: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|pair| {
                if self.order.swaps_bytes() {
                    u16::from_be_bytes([pair[1], pair[0]])
                } else {
                    u16::from_be_bytes([pair[0], pair[1]])
                }
            })
            .collect();
        if self.order.swaps_words() {
            words.reverse();
        }
        words
    }
}

/// A value as an integer for integer encodings: floats (from inverse scaling) round to the
/// nearest integer, ties away from zero; NaN and infinities have none.
fn integral(value: &Value) -> Option<i128> {
    match value {
        Value::Float(f) if f.is_finite() => Some(f.round() as i128),
        Value::Float(_) | Value::String(_) => None,
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Int(i) => Some(i128::from(*i)),
        Value::UInt(u) => Some(i128::from(*u)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout(encoding: Encoding, order: WordOrder) -> Layout {
        Layout {
            order,
            ..Layout::new(encoding)
        }
    }

    /// Known register images, checked by hand against the byte-order table in the module docs.
    #[test]
    fn decodes_known_register_images() {
        use Encoding::*;
        use WordOrder::*;
        // 123.456f32 = 0x42F6E979; -2i32 = 0xFFFFFFFE; 0x0102030405060708u64.
        let cases: &[(Encoding, WordOrder, &[u16], Value)] = &[
            (
                F32,
                Abcd,
                &[0x42F6, 0xE979],
                Value::Float(f64::from(123.456f32)),
            ),
            (
                F32,
                Cdab,
                &[0xE979, 0x42F6],
                Value::Float(f64::from(123.456f32)),
            ),
            (
                F32,
                Badc,
                &[0xF642, 0x79E9],
                Value::Float(f64::from(123.456f32)),
            ),
            (
                F32,
                Dcba,
                &[0x79E9, 0xF642],
                Value::Float(f64::from(123.456f32)),
            ),
            (I32, Abcd, &[0xFFFF, 0xFFFE], Value::Int(-2)),
            (I32, Cdab, &[0xFFFE, 0xFFFF], Value::Int(-2)),
            (U32, Abcd, &[0x0001, 0x0000], Value::UInt(65_536)),
            (U32, Badc, &[0x0100, 0x0000], Value::UInt(65_536)),
            (
                U64,
                Abcd,
                &[0x0102, 0x0304, 0x0506, 0x0708],
                Value::UInt(0x0102_0304_0506_0708),
            ),
            (
                U64,
                Cdab,
                &[0x0708, 0x0506, 0x0304, 0x0102],
                Value::UInt(0x0102_0304_0506_0708),
            ),
            (
                U64,
                Badc,
                &[0x0201, 0x0403, 0x0605, 0x0807],
                Value::UInt(0x0102_0304_0506_0708),
            ),
            (
                U64,
                Dcba,
                &[0x0807, 0x0605, 0x0403, 0x0201],
                Value::UInt(0x0102_0304_0506_0708),
            ),
            (I64, Abcd, &[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFD], Value::Int(-3)),
            (
                F64,
                Abcd,
                &[0x4009, 0x21FB, 0x5444, 0x2D18],
                Value::Float(std::f64::consts::PI),
            ),
            (
                F64,
                Dcba,
                &[0x182D, 0x4454, 0xFB21, 0x0940],
                Value::Float(std::f64::consts::PI),
            ),
            (I16, Abcd, &[0xFF9C], Value::Int(-100)),
            (U16, Abcd, &[0xFF9C], Value::UInt(65_436)),
            (Bool, Abcd, &[1], Value::Bool(true)),
        ];
        for (encoding, order, words, expected) in cases {
            let got = layout(*encoding, *order).decode(words).unwrap();
            assert_eq!(&got, expected, "{encoding:?} {order:?} {words:04X?}");
        }
    }

    #[test]
    fn decodes_bits_and_strings() {
        let bit = Layout {
            bit: 3,
            ..Layout::new(Encoding::Bit)
        };
        assert_eq!(bit.decode(&[0b1000]).unwrap(), Value::Bool(true));
        assert_eq!(bit.decode(&[0b0111]).unwrap(), Value::Bool(false));
        let text = Layout {
            length: 3,
            ..Layout::new(Encoding::String)
        };
        assert_eq!(
            text.decode(&[0x4142, 0x4300, 0x0000]).unwrap(),
            Value::String("ABC".into())
        );
        let swapped = Layout {
            order: WordOrder::Badc,
            ..text
        };
        assert_eq!(
            swapped.decode(&[0x4241, 0x0043, 0x0000]).unwrap(),
            Value::String("ABC".into())
        );
        assert_eq!(text.decode(&[0xFFFE, 0, 0]), Err(CodecError::Utf8));
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        assert_eq!(
            Layout::new(Encoding::F64).decode(&[1, 2]),
            Err(CodecError::Length {
                expected: 4,
                got: 2
            })
        );
    }

    #[test]
    fn encode_rejects_values_that_do_not_fit() {
        assert!(
            Layout::new(Encoding::U16)
                .encode(&Value::UInt(70_000))
                .is_err()
        );
        assert!(
            Layout::new(Encoding::I16)
                .encode(&Value::Int(-40_000))
                .is_err()
        );
        assert!(
            Layout::new(Encoding::F32)
                .encode(&Value::Float(1e300))
                .is_err()
        );
        let text = Layout {
            length: 1,
            ..Layout::new(Encoding::String)
        };
        assert!(text.encode(&Value::String("abc".into())).is_err());
    }

    #[test]
    fn integer_encodings_round_scaled_floats() {
        assert_eq!(
            Layout::new(Encoding::U16)
                .encode(&Value::Float(123.4))
                .unwrap(),
            vec![123]
        );
        assert_eq!(
            Layout::new(Encoding::I16)
                .encode(&Value::Float(-2.5))
                .unwrap(),
            vec![(-3i16) as u16]
        );
        assert!(
            Layout::new(Encoding::U16)
                .encode(&Value::Float(-0.6))
                .is_err()
        );
        assert!(
            Layout::new(Encoding::I32)
                .encode(&Value::Float(f64::NAN))
                .is_err()
        );
    }

    #[test]
    fn bit_encoding_sets_only_its_bit() {
        let bit = Layout {
            bit: 15,
            ..Layout::new(Encoding::Bit)
        };
        assert_eq!(bit.encode(&Value::Bool(true)).unwrap(), vec![0x8000]);
    }

    fn any_order() -> impl Strategy<Value = WordOrder> {
        prop::sample::select(WordOrder::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn i32_round_trips(v: i32, order in any_order()) {
            let l = layout(Encoding::I32, order);
            prop_assert_eq!(l.decode(&l.encode(&Value::Int(v.into())).unwrap()).unwrap(), Value::Int(v.into()));
        }

        #[test]
        fn u32_round_trips(v: u32, order in any_order()) {
            let l = layout(Encoding::U32, order);
            prop_assert_eq!(l.decode(&l.encode(&Value::UInt(v.into())).unwrap()).unwrap(), Value::UInt(v.into()));
        }

        #[test]
        fn i64_round_trips(v: i64, order in any_order()) {
            let l = layout(Encoding::I64, order);
            prop_assert_eq!(l.decode(&l.encode(&Value::Int(v)).unwrap()).unwrap(), Value::Int(v));
        }

        #[test]
        fn u64_round_trips(v: u64, order in any_order()) {
            let l = layout(Encoding::U64, order);
            prop_assert_eq!(l.decode(&l.encode(&Value::UInt(v)).unwrap()).unwrap(), Value::UInt(v));
        }

        #[test]
        fn f32_round_trips(v in any::<f32>().prop_filter("not NaN", |v| !v.is_nan()), order in any_order()) {
            let l = layout(Encoding::F32, order);
            let value = Value::Float(f64::from(v));
            prop_assert_eq!(l.decode(&l.encode(&value).unwrap()).unwrap(), value);
        }

        #[test]
        fn f64_round_trips(v in any::<f64>().prop_filter("not NaN", |v| !v.is_nan()), order in any_order()) {
            let l = layout(Encoding::F64, order);
            prop_assert_eq!(l.decode(&l.encode(&Value::Float(v)).unwrap()).unwrap(), Value::Float(v));
        }

        #[test]
        fn i16_and_u16_round_trip(v: i16, w: u16) {
            let i = Layout::new(Encoding::I16);
            let u = Layout::new(Encoding::U16);
            prop_assert_eq!(i.decode(&i.encode(&Value::Int(v.into())).unwrap()).unwrap(), Value::Int(v.into()));
            prop_assert_eq!(u.decode(&u.encode(&Value::UInt(w.into())).unwrap()).unwrap(), Value::UInt(w.into()));
        }

        #[test]
        fn strings_round_trip(text in "[a-zA-Z0-9 _-]{0,20}", swapped: bool) {
            let l = Layout {
                order: if swapped { WordOrder::Badc } else { WordOrder::Abcd },
                length: 10,
                ..Layout::new(Encoding::String)
            };
            let words = l.encode(&Value::String(text.as_str().into())).unwrap();
            prop_assert_eq!(words.len(), 10);
            prop_assert_eq!(l.decode(&words).unwrap(), Value::String(text.trim_end().into()));
        }

        #[test]
        fn bits_round_trip(on: bool, bit in 0u8..16) {
            let l = Layout { bit, ..Layout::new(Encoding::Bit) };
            prop_assert_eq!(l.decode(&l.encode(&Value::Bool(on)).unwrap()).unwrap(), Value::Bool(on));
        }
    }
}

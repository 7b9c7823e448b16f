//! Block-read optimiser: bindings of one device, table and poll interval → as few reads as possible.
//!
//! Points are sorted by address and joined greedily into blocks while the block stays within the
//! device's maximum request length and the unbound gap between neighbours is at most the maximum
//! gap (reading through a few unbound registers is cheaper than another round trip: Telegraf's
//! `max_insert`). Limits: at most 125 registers or 2000 bits per read (Modbus Application
//! Protocol v1.1b3 §6.1–6.4), or less if the device says so.
//!
//! When a device answers a block with an exception, the poller [`split`]s it and retries the
//! halves; the halves that work replace the block for good, so the plan itself holds what was
//! learned about the device.

use crate::config::sources::modbus::RegisterTable;
use crate::sources::modbus::codec::Layout;
use crate::twin::PropertyId;

/// One binding to read: a property, where it starts and how many registers (or bits) it spans.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The property it feeds.
    pub property: PropertyId,
    /// First register or bit, zero-based.
    pub address: u16,
    /// Registers (or bits) it spans, at least 1.
    pub width: u16,
    /// How to decode it.
    pub layout: Layout,
}

impl Point {
    /// One past the last register or bit, as `u32` (can be 65536).
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.width)
    }
}

/// One read request and the points it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The table read.
    pub table: RegisterTable,
    /// First register or bit.
    pub start: u16,
    /// Registers or bits read.
    pub count: u16,
    /// Points inside `start..start + count`, sorted by address.
    pub points: Vec<Point>,
}

/// Request sizing limits of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most registers per read, 1..=125.
    pub max_registers: u16,
    /// Most bits per read, 1..=2000.
    pub max_bits: u16,
    /// Unbound registers a read may span to join neighbours.
    pub max_gap_registers: u16,
    /// Unbound bits a read may span to join neighbours.
    pub max_gap_bits: u16,
}

impl Limits {
    fn for_table(&self, table: RegisterTable) -> (u32, u32) {
        if table.is_bits() {
            (u32::from(self.max_bits), u32::from(self.max_gap_bits))
        } else {
            (
                u32::from(self.max_registers),
                u32::from(self.max_gap_registers),
            )
        }
    }
}

/// Joins `points` of one table into blocks within `limits`. Points wider than the maximum
/// length still get a block of their own (the device will say whether it accepts it).
pub fn plan(table: RegisterTable, mut points: Vec<Point>, limits: &Limits) -> Vec<Block> {
    let (max_len, max_gap) = limits.for_table(table);
    points.sort_by_key(|p| (p.address, p.width));
    let mut blocks: Vec<Block> = Vec::new();
    for point in points {
        if let Some(block) = blocks.last_mut() {
            let start = u32::from(block.start);
            let end = start + u32::from(block.count);
            let gap = u32::from(point.address).saturating_sub(end);
            let new_end = end.max(point.end());
            if gap <= max_gap && new_end - start <= max_len {
                block.count = (new_end - start) as u16;
                block.points.push(point);
                continue;
            }
        }
        blocks.push(Block {
            table,
            start: point.address,
            count: point.width,
            points: vec![point],
        });
    }
    blocks
}

/// Splits a block of two or more points into two blocks of about half the points each, each
/// spanning only its own points. `None` for a single-point block.
pub fn split(block: &Block) -> Option<(Block, Block)> {
    if block.points.len() < 2 {
        return None;
    }
    let middle = block.points.len() / 2;
    let make = |points: &[Point]| {
        let start = points.iter().map(|p| p.address).min().unwrap_or(0);
        let end = points.iter().map(Point::end).max().unwrap_or(0);
        Block {
            table: block.table,
            start,
            count: (end - u32::from(start)) as u16,
            points: points.to_vec(),
        }
    };
    Some((make(&block.points[..middle]), make(&block.points[middle..])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::modbus::codec::Encoding;

    fn point(id: u32, address: u16, width: u16) -> Point {
        Point {
            property: PropertyId(id),
            address,
            width,
            layout: Layout::new(Encoding::U16),
        }
    }

    const LIMITS: Limits = Limits {
        max_registers: 125,
        max_bits: 2000,
        max_gap_registers: 10,
        max_gap_bits: 64,
    };

    fn spans(blocks: &[Block]) -> Vec<(u16, u16, usize)> {
        blocks
            .iter()
            .map(|b| (b.start, b.count, b.points.len()))
            .collect()
    }

    #[test]
    fn table_of_plans() {
        // (points as (address, width), limits override, expected blocks (start, count, points))
        type Case = (
            &'static [(u16, u16)],
            Option<Limits>,
            &'static [(u16, u16, usize)],
        );
        let cases: &[Case] = &[
            // Adjacent registers join.
            (&[(0, 1), (1, 2), (3, 1)], None, &[(0, 4, 3)]),
            // A gap of 10 is read through; 11 is not.
            (&[(0, 1), (11, 1), (23, 1)], None, &[(0, 12, 2), (23, 1, 1)]),
            // Unsorted input, overlapping points (a bit and a word of one register).
            (&[(5, 2), (0, 1), (0, 1)], None, &[(0, 7, 3)]),
            // The maximum length splits a long run: 130 registers → 125 + 5.
            (
                &[(0, 25), (25, 25), (50, 25), (75, 25), (100, 25), (125, 5)],
                None,
                &[(0, 125, 5), (125, 5, 1)],
            ),
            // A device limited to 32 registers.
            (
                &[(0, 16), (16, 16), (32, 2)],
                Some(Limits {
                    max_registers: 32,
                    ..LIMITS
                }),
                &[(0, 32, 2), (32, 2, 1)],
            ),
            // No gap allowed.
            (
                &[(0, 1), (2, 1)],
                Some(Limits {
                    max_gap_registers: 0,
                    ..LIMITS
                }),
                &[(0, 1, 1), (2, 1, 1)],
            ),
            // The very top of the address space.
            (&[(65_532, 4)], None, &[(65_532, 4, 1)]),
        ];
        for (points, limits, expected) in cases {
            let points = points
                .iter()
                .enumerate()
                .map(|(i, (address, width))| point(i as u32, *address, *width))
                .collect();
            let blocks = plan(RegisterTable::Holding, points, &limits.unwrap_or(LIMITS));
            assert_eq!(
                spans(&blocks),
                expected.to_vec(),
                "{points:?}",
                points = expected
            );
        }
    }

    #[test]
    fn bit_tables_use_bit_limits() {
        let points = (0..3000)
            .step_by(100)
            .map(|a| point(a, a as u16, 1))
            .collect();
        let blocks = plan(RegisterTable::Coil, points, &LIMITS);
        // Gaps of 99 bits exceed the 64-bit gap: one block per point.
        assert_eq!(blocks.len(), 30);
        let dense = (0..2500u16).map(|a| point(u32::from(a), a, 1)).collect();
        let blocks = plan(RegisterTable::Coil, dense, &LIMITS);
        assert_eq!(spans(&blocks), vec![(0, 2000, 2000), (2000, 500, 500)]);
    }

    #[test]
    fn split_halves_points_and_shrinks_spans() {
        let block = plan(
            RegisterTable::Input,
            vec![point(0, 0, 2), point(1, 8, 2), point(2, 20, 2)],
            &LIMITS,
        )
        .remove(0);
        assert_eq!((block.start, block.count), (0, 22));
        let (left, right) = split(&block).unwrap();
        assert_eq!((left.start, left.count, left.points.len()), (0, 2, 1));
        assert_eq!((right.start, right.count, right.points.len()), (8, 14, 2));
        assert!(split(&left).is_none());
    }
}

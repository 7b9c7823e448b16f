//! Quality bytes (the contract's `list<u8>` columns: good = 0, uncertain = 1, bad = 2, any other
//! byte bad) as [`Quality`] values without a pass per element when every byte is a discriminant:
//! the batch's qualities arrive as bytes on both builds, and converting 1024 of them one by one
//! cost about 5 % of a call in WebAssembly (every loop iteration there is also a deadline check).

use crate::Quality;

// wit-bindgen makes `Quality` a `#[repr(u8)]` enum with its cases in WIT order; the
// reinterpretations below rely on exactly these discriminants.
const _: () = assert!(
    size_of::<Quality>() == 1
        && align_of::<Quality>() == 1
        && Quality::Good as u8 == 0
        && Quality::Uncertain as u8 == 1
        && Quality::Bad as u8 == 2
);

/// Whether every byte is 0, 1 or 2, checked eight bytes at a time.
pub(crate) fn all_discriminants(bytes: &[u8]) -> bool {
    // A byte is above 2 when one of its six high bits is set, or it is 3 (its two low bits set).
    const HIGH: u64 = 0xFCFC_FCFC_FCFC_FCFC;
    const LOW: u64 = 0x0101_0101_0101_0101;
    let mut chunks = bytes.chunks_exact(8);
    let mut above = 0u64;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        above |= (x & HIGH) | (x & (x >> 1) & LOW);
    }
    above == 0 && chunks.remainder().iter().all(|b| *b <= 2)
}

/// `bytes` as qualities, when every byte is a discriminant (the native export lends the host's
/// column this way).
#[cfg(not(target_family = "wasm"))]
pub(crate) fn lend(bytes: &[u8]) -> Option<&[Quality]> {
    all_discriminants(bytes).then(|| {
        // SAFETY: `Quality` is one byte, alignment 1, with discriminants 0, 1 and 2 (asserted
        // above) and every byte is one of them; same length and lifetime.
        #[allow(
            unsafe_code,
            reason = "a checked reinterpretation of bytes as a u8 enum"
        )]
        unsafe {
            std::slice::from_raw_parts(bytes.as_ptr().cast::<Quality>(), bytes.len())
        }
    })
}

/// `bytes` made qualities in place (same allocation); any byte other than a discriminant
/// becomes [`Quality::Bad`].
pub(crate) fn from_bytes(bytes: Vec<u8>) -> Vec<Quality> {
    if !all_discriminants(&bytes) {
        return bytes.into_iter().map(Quality::from_byte).collect();
    }
    let mut bytes = std::mem::ManuallyDrop::new(bytes);
    // SAFETY: as in `lend`, every byte is a valid `Quality`; `Quality` has the size and alignment
    // of `u8`, so the allocation's layout is the one this `Vec` will free with; ownership moves
    // from the `ManuallyDrop` (never dropped) to the new `Vec`.
    #[allow(
        unsafe_code,
        reason = "a checked reinterpretation of bytes as a u8 enum"
    )]
    unsafe {
        Vec::from_raw_parts(
            bytes.as_mut_ptr().cast::<Quality>(),
            bytes.len(),
            bytes.capacity(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_above_two_is_found_wherever_it_is() {
        for len in 0..20 {
            assert!(all_discriminants(&vec![2; len]), "{len}");
            assert!(all_discriminants(
                &(0..len).map(|i| (i % 3) as u8).collect::<Vec<_>>()
            ));
            for at in 0..len {
                for bad in [3u8, 4, 7, 8, 0x80, 0xFE, 0xFF] {
                    let mut bytes = vec![1u8; len];
                    bytes[at] = bad;
                    assert!(!all_discriminants(&bytes), "{len} {at} {bad}");
                    assert!(lend(&bytes).is_none());
                    let q = from_bytes(bytes);
                    assert_eq!(q[at], Quality::Bad);
                    assert!(
                        q.iter()
                            .enumerate()
                            .all(|(i, q)| i == at || *q == Quality::Uncertain)
                    );
                }
            }
        }
        let q = from_bytes(vec![0, 1, 2, 2, 1, 0, 0, 1, 2]);
        assert_eq!(q[..3], [Quality::Good, Quality::Uncertain, Quality::Bad]);
        assert_eq!(lend(&[2, 0]), Some(&[Quality::Bad, Quality::Good][..]));
    }
}

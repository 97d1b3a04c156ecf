//! Which of a few marked stages each stage depends on, directly or not, as bitsets: `validate` asks it which
//! stages with overlapping paths may run at the same time.

/// For each of `count` nodes, the nodes among `marked` it depends on, directly or not; `needs(n)` lists the
/// direct needs and `order` is a topological order. Bitsets over the marked nodes only: cheap when few are.
pub(crate) fn ancestors_among(
    count: usize,
    order: &[usize],
    needs: impl Fn(usize) -> Vec<usize>,
    marked: &[usize],
) -> Vec<Vec<u64>> {
    let words = marked.len().div_ceil(64);
    let mut bit_of = vec![usize::MAX; count];
    for (bit, &node) in marked.iter().enumerate() {
        bit_of[node] = bit;
    }
    let mut ancestors = vec![vec![0u64; words]; count];
    for &node in order {
        let mut set = vec![0u64; words];
        for need in needs(node) {
            for (word, bits) in set.iter_mut().zip(&ancestors[need]) {
                *word |= bits;
            }
            if let Some(bit) = Some(bit_of[need]).filter(|&bit| bit != usize::MAX) {
                set[bit / 64] |= 1 << (bit % 64);
            }
        }
        ancestors[node] = set;
    }
    ancestors
}

/// Whether bit `bit` is set.
pub(crate) fn has_bit(set: &[u64], bit: usize) -> bool {
    set.get(bit / 64)
        .is_some_and(|word| word & (1 << (bit % 64)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_are_transitive_and_limited_to_marked_nodes() {
        // 0 -> 1 -> 2, 3 alone; marked: 0 and 3.
        let needs = |node: usize| match node {
            1 => vec![0],
            2 => vec![1],
            _ => Vec::new(),
        };
        let ancestors = ancestors_among(4, &[0, 3, 1, 2], needs, &[0, 3]);
        assert!(has_bit(&ancestors[2], 0), "2 depends on 0 through 1");
        assert!(!has_bit(&ancestors[2], 1));
        assert!(!has_bit(&ancestors[3], 0));
        assert!(!has_bit(&ancestors[0], 0));
    }
}

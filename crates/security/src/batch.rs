//! One signature for many records. The adapter signs the Merkle tree hash of
//! a batch's content hashes (RFC 9162 §2.1, SHA-256) instead of every record:
//! an Ed25519 signature costs ~20 µs to make and ~40 µs to check, a tree of
//! 250 leaves under 1 µs per leaf. Each record carries its inclusion proof
//! (`govbus.v1.BatchInclusion`), so it still verifies alone, minimised or
//! not; the broker checks each batch's signature once, and each record's
//! place with the nodes its batch's other records proved (`batch_proof`).

use bytes::Bytes;
use govbus_proto::v1::{BatchInclusion, BatchRoot};
use prost::Message;

use crate::batch_proof::{Hash, leaf_hash, node_hash};

/// What `BatchRoot.context` always says.
const CONTEXT: &str = "govbus.v1.BatchRoot";

/// The message a batch signature covers.
pub(crate) fn signed_message(inclusion: &BatchInclusion) -> Vec<u8> {
    BatchRoot {
        context: CONTEXT.to_string(),
        root: inclusion.root.clone(),
        tree_size: inclusion.tree_size,
    }
    .encode_to_vec()
}

/// The tree over `content_hashes`, in order: each leaf's place and proof.
///
/// Built level by level — n leaf hashes and n − 1 node hashes, a node
/// without a sibling moving up a level unhashed, which is RFC 9162's tree
/// (a node of n leaves splits at the largest power of two below n) — where
/// the tree library re-hashed each new leaf's ancestors as it was pushed,
/// ~log₂ n node hashes a leaf (docs/PROFILING.md). Every path
/// is a slice of one buffer.
pub(crate) fn inclusions<'a>(
    content_hashes: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<BatchInclusion> {
    let leaves: Vec<Hash> = content_hashes.into_iter().map(leaf_hash).collect();
    if leaves.is_empty() {
        return Vec::new();
    }
    let tree_size = leaves.len();
    let mut levels = vec![leaves];
    while let Some(below) = levels.last().filter(|level| level.len() > 1) {
        let pairs = below.chunks_exact(2);
        let alone = pairs.remainder().first().copied();
        let above = pairs
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .chain(alone)
            .collect();
        levels.push(above);
    }
    let root = Bytes::copy_from_slice(&levels[levels.len() - 1][0]);
    let below_root = &levels[..levels.len() - 1];
    let mut paths = Vec::with_capacity(tree_size * 32 * below_root.len());
    let mut ends = Vec::with_capacity(tree_size);
    for leaf in 0..tree_size {
        let mut index = leaf;
        for level in below_root {
            if let Some(sibling) = level.get(index ^ 1) {
                paths.extend_from_slice(sibling);
            }
            index /= 2;
        }
        ends.push(paths.len());
    }
    let paths = Bytes::from(paths);
    let mut start = 0;
    ends.into_iter()
        .enumerate()
        .map(|(leaf_index, end)| {
            let path = paths.slice(start..end);
            start = end;
            BatchInclusion {
                root: root.clone(),
                tree_size: tree_size as u64,
                leaf_index: leaf_index as u64,
                path,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch_proof::includes;
    use ct_merkle::mem_backed_tree::MemoryBackedTree;
    use sha2::{Digest, Sha256};

    /// The tree library's root and proofs (how batches were signed before):
    /// the same bytes, for every size up to past a few powers of two.
    #[test]
    fn the_tree_is_the_tree_librarys_byte_for_byte() {
        for n in 1..=300u32 {
            let hashes: Vec<Vec<u8>> = (0..n)
                .map(|i| Sha256::digest(i.to_be_bytes()).to_vec())
                .collect();
            let mut tree = MemoryBackedTree::<Sha256, &[u8]>::new();
            for hash in &hashes {
                tree.push(hash.as_slice());
            }
            let proofs = inclusions(hashes.iter().map(Vec::as_slice));
            assert_eq!(proofs.len(), n as usize);
            for (leaf, proof) in proofs.iter().enumerate() {
                assert_eq!(&proof.root[..], tree.root().as_bytes().as_slice(), "{n}");
                assert_eq!(
                    &proof.path[..],
                    tree.prove_inclusion(leaf).as_bytes(),
                    "leaf {leaf} of {n}"
                );
            }
        }
        assert!(inclusions(std::iter::empty()).is_empty());
    }

    /// Each leaf's proof is its own: it proves its leaf, in its place.
    #[test]
    fn every_leaf_gets_the_proof_of_its_place_under_one_root() {
        for n in 1..=17u8 {
            let hashes: Vec<Vec<u8>> = (0..n).map(|i| Sha256::digest([i]).to_vec()).collect();
            let proofs = inclusions(hashes.iter().map(Vec::as_slice));
            assert_eq!(proofs.len(), usize::from(n));
            for (i, proof) in proofs.iter().enumerate() {
                assert_eq!(proof.root, proofs[0].root, "one root per batch");
                assert_eq!((proof.tree_size, proof.leaf_index), (n.into(), i as u64));
                assert!(includes(proof, &hashes[i], None), "leaf {i} of {n}");
            }
        }
    }
}

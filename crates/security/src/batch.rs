//! One signature for many records. The adapter signs the Merkle tree hash of
//! a batch's content hashes (RFC 9162 §2.1, SHA-256) instead of every record:
//! an Ed25519 signature costs ~20 µs to make and ~40 µs to check, a tree of
//! 250 leaves under 1 µs per leaf. Each record carries its inclusion proof
//! (`govbus.v1.BatchInclusion`), so it still verifies alone, minimised or
//! not; the broker checks each batch's signature once.

use ct_merkle::{InclusionProof, RootHash, mem_backed_tree::MemoryBackedTree};
use govbus_proto::v1::{BatchInclusion, BatchRoot};
use prost::Message;
use sha2::{Sha256, digest::Output};

/// What `BatchRoot.context` always says.
const CONTEXT: &str = "govbus.v1.BatchRoot";

/// Batches larger than this are refused before any tree arithmetic (the
/// tree library panics on sizes near 2^63; adapters send at most thousands).
const MAX_TREE_SIZE: u64 = 1 << 24;

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
pub(crate) fn inclusions<'a>(
    content_hashes: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<BatchInclusion> {
    let mut tree = MemoryBackedTree::<Sha256, &[u8]>::new();
    for hash in content_hashes {
        tree.push(hash);
    }
    let root = tree.root().as_bytes().to_vec();
    let tree_size = tree.len();
    (0..tree_size)
        .map(|leaf_index| BatchInclusion {
            root: root.clone(),
            tree_size,
            leaf_index,
            path: tree
                .prove_inclusion(leaf_index as usize)
                .as_bytes()
                .to_vec(),
        })
        .collect()
}

/// Whether `content_hash` is leaf `leaf_index` of the tree whose hash is
/// `root`. Never panics, whatever the numbers say.
pub(crate) fn includes(inclusion: &BatchInclusion, content_hash: &[u8]) -> bool {
    if inclusion.tree_size == 0
        || inclusion.tree_size > MAX_TREE_SIZE
        || inclusion.leaf_index >= inclusion.tree_size
    {
        return false;
    }
    let Ok(root) = Output::<Sha256>::try_from(inclusion.root.as_slice()) else {
        return false;
    };
    let Ok(proof) = InclusionProof::<Sha256>::try_from_bytes(inclusion.path.clone()) else {
        return false;
    };
    RootHash::<Sha256>::new(root, inclusion.tree_size)
        .verify_inclusion(&content_hash, inclusion.leaf_index, &proof)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn leaves(n: u8) -> Vec<Vec<u8>> {
        (0..n).map(|i| Sha256::digest([i]).to_vec()).collect()
    }

    #[test]
    fn every_leaf_of_every_size_proves_its_place_and_no_other() {
        for n in 1..=17u8 {
            let hashes = leaves(n);
            let proofs = inclusions(hashes.iter().map(Vec::as_slice));
            assert_eq!(proofs.len(), usize::from(n));
            for (i, proof) in proofs.iter().enumerate() {
                assert_eq!(proof.root, proofs[0].root, "one root per batch");
                assert!(includes(proof, &hashes[i]), "leaf {i} of {n}");
                if n > 1 {
                    let other = (i + 1) % usize::from(n);
                    assert!(!includes(proof, &hashes[other]), "leaf {other} at {i}");
                    let moved = BatchInclusion {
                        leaf_index: other as u64,
                        ..proof.clone()
                    };
                    assert!(!includes(&moved, &hashes[i]), "leaf {i} claimed at {other}");
                }
            }
        }
    }

    #[test]
    fn the_root_of_one_leaf_is_its_leaf_hash() {
        let hash = Sha256::digest(b"record").to_vec();
        let proof = &inclusions([hash.as_slice()])[0];
        let leaf_hash = Sha256::new()
            .chain_update([0u8])
            .chain_update(&hash)
            .finalize();
        assert_eq!(proof.root, leaf_hash.to_vec());
        assert!(proof.path.is_empty());
    }

    /// A wrong `tree_size` may still lead to the root (RFC 9162 proofs do
    /// not pin the size); the signature, which covers it, refuses it.
    #[test]
    fn malformed_proofs_are_refused_without_panicking() {
        let hashes = leaves(5);
        let proof = inclusions(hashes.iter().map(Vec::as_slice))[2].clone();
        for bad in [
            BatchInclusion {
                tree_size: 0,
                ..proof.clone()
            },
            BatchInclusion {
                tree_size: u64::MAX,
                leaf_index: u64::MAX - 1,
                ..proof.clone()
            },
            BatchInclusion {
                leaf_index: 5,
                ..proof.clone()
            },
            BatchInclusion {
                root: proof.root[..31].to_vec(),
                ..proof.clone()
            },
            BatchInclusion {
                path: proof.path[..40].to_vec(),
                ..proof.clone()
            },
            BatchInclusion {
                path: [proof.path.as_slice(), &[0; 32]].concat(),
                ..proof.clone()
            },
        ] {
            assert!(!includes(&bad, &hashes[2]), "{bad:?}");
        }
    }
}

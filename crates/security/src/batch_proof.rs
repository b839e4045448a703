//! Checking that a record is the leaf its inclusion proof says it is, in the
//! Merkle tree of its batch (RFC 9162 §2.1.3.2, SHA-256).
//!
//! Why not simply the tree library's check: the proof of one leaf of 250 is
//! 8 hashes to recompute, and the broker checks every leaf of every batch.
//! Leaves of one batch share most of their paths: once one path led to the
//! root, each node on it is known to be the tree's (SHA-256 is collision
//! resistant). A later leaf's climb stops at the first such node it
//! computes; the rest of its proof is then compared with the known
//! siblings, not hashed — about 2 hashes a leaf instead of 9
//! (docs/PROFILING.md). The answer is the same as a full check:
//! a proof that differs from what is known anywhere on its way up is
//! checked in full.

use std::collections::{HashMap, VecDeque, hash_map::Entry};

use govbus_proto::v1::BatchInclusion;
use sha2::{Digest, Sha256};

/// Batches larger than this are refused before any tree arithmetic
/// (adapters send at most thousands).
const MAX_TREE_SIZE: u64 = 1 << 24;
/// The most hashes a path of a tree of at most `MAX_TREE_SIZE` leaves has.
const MAX_DEPTH: usize = MAX_TREE_SIZE.trailing_zeros() as usize;

pub(crate) type Hash = [u8; 32];

/// The leaves a node of the tree covers: `start..end`.
type Span = (u64, u64);

/// Nodes of one tree, identified by its root and size, known to lead to
/// that root.
#[derive(Debug, Default)]
pub(crate) struct ProvenNodes {
    nodes: HashMap<Span, Hash, foldhash::fast::RandomState>,
}

impl ProvenNodes {
    /// Whether `hash` is the known node `span` and every sibling above it
    /// in the proof is the known one.
    fn completes(&self, span: Span, hash: &Hash, above: &[Step], siblings: &[u8]) -> bool {
        self.nodes.get(&span) == Some(hash)
            && above
                .iter()
                .zip(siblings.chunks_exact(32))
                .all(|(step, sibling)| {
                    self.nodes
                        .get(&step.sibling)
                        .is_some_and(|known| known.as_slice() == sibling)
                })
    }

    /// Nodes held.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }
}

/// The proven nodes of the trees seen last, up to a number of nodes and of
/// trees; the tree seen first is forgotten first. Why a budget, not a few
/// trees: a batch's records are spread over the topic's partitions, which
/// a broker reads at different paces, so a tree's records can arrive in
/// runs many trees apart — kept to 32 trees, with all forgotten when a
/// 33rd came, the bench's ingest still hashed ~6 nodes a record
/// (docs/PROFILING.md).
#[derive(Debug, Default)]
pub(crate) struct ProvenTrees {
    trees: HashMap<TreeKey, ProvenNodes, foldhash::fast::RandomState>,
    /// In the order first seen.
    seen: VecDeque<TreeKey>,
    nodes: usize,
}

/// A tree: its root and size.
type TreeKey = (Hash, u64);

/// Nodes remembered at most, over all trees: ~16 MB.
const MAX_PROVEN_NODES: usize = 1 << 18;
/// Trees remembered at most (proofs that fail add trees with no nodes).
/// A tree enters before its batch signature is checked, so whoever can
/// write to the topics can make the broker forget honest trees — which
/// costs hashes, never a wrong answer.
const MAX_PROVEN_TREES: usize = 4096;
/// Trees larger than this are checked without remembering their nodes.
const MAX_PROVEN_TREE_SIZE: u64 = 4096;

impl ProvenTrees {
    /// [`includes`], with and adding to the nodes of the inclusion's tree.
    pub(crate) fn includes(&mut self, inclusion: &BatchInclusion, content_hash: &[u8]) -> bool {
        let Ok(root) = Hash::try_from(inclusion.root.as_ref()) else {
            return false;
        };
        if inclusion.tree_size > MAX_PROVEN_TREE_SIZE {
            return includes(inclusion, content_hash, None);
        }
        let key = (root, inclusion.tree_size);
        let proven = match self.trees.entry(key) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => {
                self.seen.push_back(key);
                new.insert(ProvenNodes::default())
            }
        };
        let before = proven.len();
        let included = includes(inclusion, content_hash, Some(proven));
        self.nodes += proven.len() - before;
        while self.nodes > MAX_PROVEN_NODES || self.trees.len() > MAX_PROVEN_TREES {
            let Some(oldest) = self.seen.pop_front() else {
                break;
            };
            if let Some(forgotten) = self.trees.remove(&oldest) {
                self.nodes -= forgotten.len();
            }
        }
        included
    }

    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        (self.trees.len(), self.nodes)
    }
}

/// One level of a leaf's path, from the leaf up: the node the climb is at,
/// and its sibling in the proof.
#[derive(Debug, Clone, Copy, Default)]
struct Step {
    node: Span,
    sibling: Span,
    node_is_left: bool,
}

/// The steps from leaf `leaf` of a tree of `size` leaves up to the root,
/// leaf level first (the order of the proof's hashes), into `out`; how many.
/// RFC 9162 §2.1.1: a node of n > 1 leaves splits at the largest power of
/// two below n.
fn steps(leaf: u64, size: u64, out: &mut [Step; MAX_DEPTH]) -> usize {
    let (mut start, mut end) = (0, size);
    let mut depth = 0;
    // Top-down, then reversed.
    while end - start > 1 {
        let split = start + (1 << (63 - (end - start - 1).leading_zeros()));
        let step = if leaf < split {
            Step {
                node: (start, split),
                sibling: (split, end),
                node_is_left: true,
            }
        } else {
            Step {
                node: (split, end),
                sibling: (start, split),
                node_is_left: false,
            }
        };
        out[depth] = step;
        depth += 1;
        (start, end) = step.node;
    }
    out[..depth].reverse();
    depth
}

pub(crate) fn leaf_hash(leaf: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0])
        .chain_update(leaf)
        .finalize()
        .into()
}

pub(crate) fn node_hash(left: &[u8], right: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([1])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// Whether `content_hash` is leaf `leaf_index` of the tree whose hash is
/// `root`, using and adding to the nodes of that tree already `proven`
/// (pass the same `ProvenNodes` only for the same root and size). Never
/// panics, whatever the numbers say.
pub(crate) fn includes(
    inclusion: &BatchInclusion,
    content_hash: &[u8],
    proven: Option<&mut ProvenNodes>,
) -> bool {
    if inclusion.tree_size == 0
        || inclusion.tree_size > MAX_TREE_SIZE
        || inclusion.leaf_index >= inclusion.tree_size
    {
        return false;
    }
    let Ok(root) = Hash::try_from(inclusion.root.as_ref()) else {
        return false;
    };
    let mut path = [Step::default(); MAX_DEPTH];
    let depth = steps(inclusion.leaf_index, inclusion.tree_size, &mut path);
    let path = &path[..depth];
    let siblings = &inclusion.path[..];
    if siblings.len() != 32 * depth {
        return false;
    }
    let mut computed = [[0u8; 32]; MAX_DEPTH];
    let mut hash = leaf_hash(content_hash);
    // The levels climbed: up to the root, or to a node already proven.
    let mut climbed = depth;
    for (i, (step, sibling)) in path.iter().zip(siblings.chunks_exact(32)).enumerate() {
        if proven
            .as_deref()
            .is_some_and(|p| p.completes(step.node, &hash, &path[i..], &siblings[32 * i..]))
        {
            climbed = i;
            break;
        }
        computed[i] = hash;
        hash = if step.node_is_left {
            node_hash(&hash, sibling)
        } else {
            node_hash(sibling, &hash)
        };
    }
    if climbed == depth && hash != root {
        return false;
    }
    // What the climb computed and passed is proven too: it led to the root,
    // or to a node that does.
    if let Some(proven) = proven {
        let below = path.iter().zip(siblings.chunks_exact(32)).zip(&computed);
        for ((step, sibling), node) in below.take(climbed) {
            proven.nodes.insert(step.node, *node);
            let mut known = [0; 32];
            known.copy_from_slice(sibling);
            proven.nodes.insert(step.sibling, known);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::inclusions;
    use ct_merkle::{InclusionProof, RootHash};
    use sha2::digest::Output;

    /// `bytes` with the bit 0 of byte `at` flipped.
    fn flipped(bytes: &bytes::Bytes, at: usize) -> bytes::Bytes {
        let mut changed = bytes.to_vec();
        changed[at] ^= 1;
        changed.into()
    }

    fn leaves(n: u32) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| Sha256::digest(i.to_be_bytes()).to_vec())
            .collect()
    }

    /// The tree library's check, the definition this one must agree with.
    fn by_library(inclusion: &BatchInclusion, content_hash: &[u8]) -> bool {
        let Ok(root) = Output::<Sha256>::try_from(inclusion.root.as_ref()) else {
            return false;
        };
        let Ok(proof) = InclusionProof::<Sha256>::try_from_bytes(inclusion.path.to_vec()) else {
            return false;
        };
        RootHash::<Sha256>::new(root, inclusion.tree_size)
            .verify_inclusion(&content_hash, inclusion.leaf_index, &proof)
            .is_ok()
    }

    /// Every leaf of every size, alone and with the nodes other leaves
    /// proved, in order and in reverse; and no leaf in another's place.
    #[test]
    fn every_leaf_of_every_size_proves_its_place_and_no_other() {
        for n in 1..=70u32 {
            let hashes = leaves(n);
            let proofs = inclusions(hashes.iter().map(Vec::as_slice));
            for order in [false, true] {
                let mut proven = ProvenNodes::default();
                let mut indices: Vec<usize> = (0..n as usize).collect();
                if order {
                    indices.reverse();
                }
                for i in indices {
                    let proof = &proofs[i];
                    assert!(by_library(proof, &hashes[i]), "library: leaf {i} of {n}");
                    assert!(includes(proof, &hashes[i], None), "leaf {i} of {n}");
                    assert!(
                        includes(proof, &hashes[i], Some(&mut proven)),
                        "leaf {i} of {n}"
                    );
                    if n > 1 {
                        let other = (i + 1) % n as usize;
                        for proven in [None, Some(&mut proven)] {
                            assert!(!includes(proof, &hashes[other], proven), "{other} at {i}");
                        }
                        let moved = BatchInclusion {
                            leaf_index: other as u64,
                            ..proof.clone()
                        };
                        assert!(!includes(&moved, &hashes[i], Some(&mut proven)));
                        assert!(!includes(&moved, &hashes[i], None));
                    }
                }
                assert!(
                    proven.len() <= 2 * n as usize,
                    "{} nodes for {n}",
                    proven.len()
                );
            }
        }
    }

    /// What is known never lets a proof through that differs from the
    /// tree's: a sibling changed at any level, above where the climb meets
    /// a known node, is refused.
    #[test]
    fn a_proof_that_differs_above_a_known_node_is_refused() {
        let hashes = leaves(250);
        let proofs = inclusions(hashes.iter().map(Vec::as_slice));
        let mut proven = ProvenNodes::default();
        for (proof, hash) in proofs.iter().zip(&hashes) {
            assert!(includes(proof, hash, Some(&mut proven)));
        }
        for (i, proof) in proofs.iter().enumerate() {
            for level in 0..proof.path.len() / 32 {
                let mut changed = proof.clone();
                changed.path = flipped(&changed.path, 32 * level);
                assert!(
                    !includes(&changed, &hashes[i], Some(&mut proven)),
                    "{i} {level}"
                );
                assert!(!by_library(&changed, &hashes[i]));
            }
            let mut root = proof.clone();
            root.root = flipped(&root.root, 0);
            assert!(!includes(
                &root,
                &hashes[i],
                Some(&mut ProvenNodes::default())
            ));
        }
        // Still whole after all the refusals.
        for (proof, hash) in proofs.iter().zip(&hashes) {
            assert!(includes(proof, hash, Some(&mut proven)));
        }
    }

    /// Trees are forgotten oldest first, within the budgets, and what is
    /// forgotten is only checked again in full.
    #[test]
    fn proven_trees_stay_within_their_budgets() {
        let mut trees = ProvenTrees::default();
        let per_tree = 250;
        let count = MAX_PROVEN_NODES / (2 * per_tree) + 10;
        let mut first = None;
        for t in 0..count {
            let hashes: Vec<Vec<u8>> = (0..per_tree)
                .map(|i| Sha256::digest(format!("{t}/{i}")).to_vec())
                .collect();
            let proofs = inclusions(hashes.iter().map(Vec::as_slice));
            for (proof, hash) in proofs.iter().zip(&hashes) {
                assert!(trees.includes(proof, hash));
            }
            first.get_or_insert((proofs[0].clone(), hashes[0].clone()));
            let (held, nodes) = trees.sizes();
            assert!(nodes <= MAX_PROVEN_NODES, "{nodes} nodes after {t} trees");
            assert!(held <= MAX_PROVEN_TREES);
        }
        let (held, _) = trees.sizes();
        assert!(
            held < count,
            "the oldest trees are forgotten: {held} of {count}, {:?}",
            trees.sizes()
        );
        let (proof, hash) = first.unwrap();
        assert!(
            trees.includes(&proof, &hash),
            "a forgotten tree is proved again"
        );
        // Failing proofs of trees never seen: held, but within the budget.
        for n in 0..(MAX_PROVEN_TREES as u64 + 10) {
            let bogus = BatchInclusion {
                root: Sha256::digest(n.to_be_bytes()).to_vec().into(),
                ..proof.clone()
            };
            assert!(!trees.includes(&bogus, &hash));
        }
        assert!(trees.sizes().0 <= MAX_PROVEN_TREES);
    }

    #[test]
    fn the_root_of_one_leaf_is_its_leaf_hash() {
        let hash = Sha256::digest(b"record").to_vec();
        let proof = &inclusions([hash.as_slice()])[0];
        let leaf = Sha256::new()
            .chain_update([0u8])
            .chain_update(&hash)
            .finalize();
        assert_eq!(proof.root, leaf.to_vec());
        assert!(proof.path.is_empty());
        assert!(includes(proof, &hash, Some(&mut ProvenNodes::default())));
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
                tree_size: MAX_TREE_SIZE + 1,
                leaf_index: 2,
                ..proof.clone()
            },
            BatchInclusion {
                leaf_index: 5,
                ..proof.clone()
            },
            BatchInclusion {
                root: proof.root.slice(..31),
                ..proof.clone()
            },
            BatchInclusion {
                path: proof.path.slice(..40),
                ..proof.clone()
            },
            BatchInclusion {
                path: [&proof.path[..], &[0; 32]].concat().into(),
                ..proof.clone()
            },
        ] {
            assert!(!includes(&bad, &hashes[2], None), "{bad:?}");
            assert!(!includes(
                &bad,
                &hashes[2],
                Some(&mut ProvenNodes::default())
            ));
        }
        // The largest size allowed: its arithmetic holds, the proof does not.
        let largest = BatchInclusion {
            tree_size: MAX_TREE_SIZE,
            leaf_index: MAX_TREE_SIZE - 1,
            path: vec![7; 32 * MAX_DEPTH].into(),
            ..proof.clone()
        };
        assert!(!includes(&largest, &hashes[2], None));
    }
}
